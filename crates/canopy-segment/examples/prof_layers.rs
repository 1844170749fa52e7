use candle_core::{DType, Device, Tensor};
use canopy_nn::ops::*;
use std::time::Instant;
fn t<F: FnMut() -> anyhow::Result<Tensor>>(name: &str, mut f: F) -> anyhow::Result<()> {
    f()?;
    let s = Instant::now();
    let n = 3;
    for _ in 0..n {
        let y = f()?;
        y.sum_all()?.to_scalar::<f32>()?;
    }
    println!(
        "{name}: {:.1} ms",
        s.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    Ok(())
}
fn main() -> anyhow::Result<()> {
    let d = Device::Cpu;
    let x3 = Tensor::randn(0f32, 1.0, (4, 3, 256, 256), &d)?;
    let x32 = Tensor::randn(0f32, 1.0, (4, 32, 256, 256), &d)?;
    let x64 = Tensor::randn(0f32, 1.0, (4, 64, 128, 128), &d)?;
    let w3 = Tensor::randn(0f32, 0.1, (32, 3, 3, 3), &d)?;
    let w32 = Tensor::randn(0f32, 0.1, (32, 32, 3, 3), &d)?;
    let wt = Tensor::randn(0f32, 0.1, (64, 32, 2, 2), &d)?;
    let w64 = Tensor::randn(0f32, 0.1, (64, 32, 3, 3), &d)?;
    let cfg = Conv2dConfig::square(1, 1, 1, 1);
    t("conv 3->32 @256", || Ok(conv2d(&x3, &w3, None, cfg)?))?;
    t("conv 32->32 @256", || Ok(conv2d(&x32, &w32, None, cfg)?))?;
    t("conv 32->64 @128", || {
        Ok(conv2d(
            &x32.narrow(2, 0, 128)?.narrow(3, 0, 128)?.contiguous()?,
            &w64.permute((0, 1, 2, 3))?
                .contiguous()?
                .narrow(0, 0, 64)?
                .contiguous()?
                .reshape((64, 32, 3, 3))?,
            None,
            cfg,
        )?)
    })?;
    let two = TransposeAxis {
        stride: 2,
        padding: 0,
        output_padding: 0,
        dilation: 1,
    };
    t("convT 64->32 2x2 @128->256", || {
        Ok(conv_transpose2d(&x64, &wt, None, two, two, 1)?)
    })?;
    t("maxpool2 32@256", || {
        Ok(max_pool2d(&x32, PoolAxis::new(2), PoolAxis::new(2), false)?)
    })?;
    let sc = Tensor::randn(0f32, 1.0, (1, 32, 1, 1), &d)?;
    t("bn-eval (bmul+badd) 32@256", || {
        Ok(x32.broadcast_mul(&sc)?.broadcast_add(&sc)?)
    })?;
    t("bn-train stats 32@256", || {
        let m = (x32.sum_keepdim(3)?.sum_keepdim(2)?.sum_keepdim(0)? / 1e5)?;
        let c = x32.broadcast_sub(&m)?;
        let v = c.sqr()?.sum_keepdim(3)?.sum_keepdim(2)?.sum_keepdim(0)?;
        Ok(c.broadcast_div(&(v + 1e-5)?.sqrt()?)?)
    })?;
    t("relu 32@256", || Ok(x32.relu()?))?;
    t("cat 2x32@256", || Ok(Tensor::cat(&[&x32, &x32], 1)?))?;
    let _ = DType::F32;
    Ok(())
}
