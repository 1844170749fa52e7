use candle_core::{DType, Device, Tensor};
use canopy_nn::SeededVarMap;
use canopy_temporal::msresnet::{MsResNet, MsResNetConfig};
use canopy_temporal::tempcnn::{TempCnn, TempCnnConfig};
use canopy_temporal::transformer::{TransformerClassifier, TransformerClassifierConfig};
use canopy_temporal::SeriesClassifier;
use rand::SeedableRng;
use std::time::Instant;
fn main() -> anyhow::Result<()> {
    canopy_nn::allocator::keep_freed_memory();
    let dev = Device::Cpu;
    let store = SeededVarMap::new(0);
    let vb = store.var_builder(DType::F32, &dev);
    let m: Box<dyn SeriesClassifier> = if std::env::args().any(|a| a == "--transformer") {
        Box::new(TransformerClassifier::new(
            &TransformerClassifierConfig::breizhcrops(13, 9),
            vb,
        )?)
    } else if std::env::args().any(|a| a == "--tempcnn") {
        Box::new(TempCnn::new(&TempCnnConfig::breizhcrops(13, 9, 45), vb)?)
    } else {
        Box::new(MsResNet::new(&MsResNetConfig::breizhcrops(13, 9), vb)?)
    };
    let x = Tensor::randn(0f32, 1.0, (256, 45, 13), &dev)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let train = std::env::args().any(|a| a == "--train");
    for i in 0..15 {
        let t = Instant::now();
        let y = m.forward_t(&x, train, &mut rng)?;
        if train {
            let g = y.sum_all()?.backward()?;
            drop(g);
        } else {
            y.sum_all()?.to_scalar::<f32>()?;
        }
        if i > 2 {
            println!("{:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(())
}
