//! Convolutional recurrent cells for image time series: ConvLSTM (Shi et al. 2015) and ConvGRU,
//! and a (bidirectional) layer running a cell over `(B, T, C, H, W)` sequences — the recurrent
//! encoder of MTLCC (Rußwurm & Körner 2018), which shares the cell's weights between the
//! forward and the backward pass.
//!
//! Parameter names follow the widely used PyTorch implementations: ConvLSTM as ndrplz's
//! `ConvLSTM_pytorch` (one `conv` over `[x, h]` giving the i, f, o, g gates, as the MTLCC PyTorch
//! port uses), ConvGRU as `pytorch_convgru` (`reset_gate`, `update_gate`, `out_gate`).

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::error::{invalid, shape};
use crate::init::pytorch_uniform;
use crate::ops::lstm_kernel::LstmGatesOp;
use crate::ops::{conv2d, Conv2dConfig};
use crate::Result;

/// A "same" convolution with PyTorch's `Conv2d` names and initialisation.
#[derive(Debug, Clone)]
struct SameConv {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
}

impl SameConv {
    fn new(c_in: usize, c_out: usize, k: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        if k % 2 == 0 {
            return Err(invalid(
                "convolutional recurrent cell",
                format!("kernel size {k} must be odd for 'same' padding"),
            ));
        }
        let init = pytorch_uniform(c_in * k * k);
        Ok(SameConv {
            weight: vb.get_with_hints((c_out, c_in, k, k), "weight", init)?,
            bias: if bias {
                Some(vb.get_with_hints(c_out, "bias", init)?)
            } else {
                None
            },
            cfg: Conv2dConfig::square(1, k / 2, 1, 1),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, self.bias.as_ref(), self.cfg)
    }
}

/// A ConvLSTM cell: `[i, f, o, g] = conv([x, h])`, `c' = σ(f) c + σ(i) tanh(g)`,
/// `h' = σ(o) tanh(c')`.
#[derive(Debug, Clone)]
pub struct ConvLstmCell {
    conv: SameConv,
    hidden: usize,
    input: usize,
    norm: Option<CellNorm>,
}

/// Layer normalisation inside a ConvLSTM / ConvGRU cell (the `normalize` option of the
/// TensorFlow cells MTLCC uses): a pre-activation (or the new cell state) is normalised per
/// sample over (channels, H, W), then scaled and shifted per channel.
#[derive(Debug, Clone)]
struct CellNorm {
    /// `(weight, bias)` per normalised quantity (see the `*_NORMS` names), each `(hidden,)`.
    params: Vec<(Tensor, Tensor)>,
    /// Added to the variance: `tf.contrib.layers.layer_norm`'s 1e-12.
    eps: f64,
}

/// The ConvLSTM's normalised quantities: the i, f, o, g gates and the new cell state.
const LSTM_NORMS: &[&str] = &["ln_i", "ln_f", "ln_o", "ln_g", "ln_c"];
/// The ConvGRU's: the reset and update gates and the candidate.
const GRU_NORMS: &[&str] = &["ln_r", "ln_z", "ln_n"];
/// Added to the normalised forget-gate pre-activation: the TensorFlow cell's `forget_bias`.
const FORGET_BIAS: f64 = 1.0;

impl CellNorm {
    fn new(hidden: usize, names: &[&str], vb: &VarBuilder) -> Result<Self> {
        let params = names
            .iter()
            .map(|n| -> Result<(Tensor, Tensor)> {
                let v = vb.pp(*n);
                Ok((
                    v.get_with_hints(hidden, "weight", candle_nn::Init::Const(1.0))?,
                    v.get_with_hints(hidden, "bias", candle_nn::Init::Const(0.0))?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(CellNorm { params, eps: 1e-12 })
    }

    /// Normalises `x` `(B, C, H, W)` per sample, then applies the `k`-th affine parameters.
    fn apply(&self, x: &Tensor, k: usize) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let flat = x.reshape((b, c * h * w))?; // (B, C, H, W) -> (B, C·H·W)
        let y = crate::ops::layer_norm(&flat, None, None, self.eps)?.reshape((b, c, h, w))?;
        let (wt, bs) = self
            .params
            .get(k)
            .ok_or_else(|| invalid("ConvLstmCell", "missing layer-norm parameters"))?;
        Ok(y.broadcast_mul(&wt.reshape((1, c, 1, 1))?)?
            .broadcast_add(&bs.reshape((1, c, 1, 1))?)?)
    }
}

impl ConvLstmCell {
    /// `input` channels in, `hidden` channels of state, odd `kernel` size.
    ///
    /// # Errors
    /// Even kernels, zero sizes, variables that cannot be created.
    pub fn new(
        input: usize,
        hidden: usize,
        kernel: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        if input == 0 || hidden == 0 {
            return Err(invalid("ConvLstmCell", "channel counts must be positive"));
        }
        Ok(ConvLstmCell {
            conv: SameConv::new(input + hidden, 4 * hidden, kernel, bias, vb.pp("conv"))?,
            hidden,
            input,
            norm: None,
        })
    }

    /// A cell with layer normalisation inside (Ba et al. 2016), the cell of the TensorFlow MTLCC
    /// model (`MarcCoru/tensorflow-convlstm-cell`, `ConvLSTMCell` with `normalize=True`,
    /// `peephole=False`): the convolution has no bias; each gate's pre-activation and the new
    /// cell state are normalised per sample over (hidden, H, W) with variance epsilon 1e-12
    /// (`tf.contrib.layers.layer_norm`) and scaled/shifted per channel; the forget gate gets
    /// TensorFlow's forget bias of 1 after its normalisation:
    /// `f = σ(LN_f(f̃) + 1)`, `c' = LN_c(f c + σ(LN_i(ĩ)) tanh(LN_g(g̃)))`,
    /// `h' = σ(LN_o(õ)) tanh(c')`; `c'` (normalised) is the state carried on. Variables:
    /// `conv.weight` (gate blocks in canopy's i, f, o, g order; TensorFlow stores j(=g), i, f,
    /// o) and `ln_{i,f,o,g,c}.{weight,bias}` (ones and zeros).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_layer_norm(
        input: usize,
        hidden: usize,
        kernel: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut cell = Self::new(input, hidden, kernel, false, vb.clone())?;
        cell.norm = Some(CellNorm::new(hidden, LSTM_NORMS, &vb)?);
        Ok(cell)
    }

    /// One step from state `(h, c)`.
    ///
    /// # Shapes
    /// `x`: `(B, input, H, W)`, `h`, `c`: `(B, hidden, H, W)` -> `(h', c')`.
    ///
    /// # Errors
    /// Shape errors.
    pub fn step(&self, x: &Tensor, h: &Tensor, c: &Tensor) -> Result<(Tensor, Tensor)> {
        if x.dims4()?.1 != self.input {
            return Err(shape(
                "ConvLstmCell",
                format!("input (B, {}, H, W)", self.input),
                x.dims(),
            ));
        }
        let gates = self.conv.forward(&crate::ops::cat_channels(x, h)?)?;
        let hd = self.hidden;
        if let Some(norm) = &self.norm {
            return self.normalised_gates(norm, &gates, c);
        }
        if gates.device().is_cpu() && matches!(gates.dtype(), DType::F32 | DType::F64) {
            // one fused op for the gate arithmetic (i, f, o, g blocks)
            let packed = gates.contiguous()?.apply_op2(
                &c.contiguous()?,
                LstmGatesOp {
                    order: [0, 1, 3, 2],
                },
            )?;
            return Ok((packed.narrow(1, 0, hd)?, packed.narrow(1, hd, hd)?));
        }
        self.gates_reference(&gates, c)
    }

    /// One step with the gate arithmetic composed from candle ops (any device and dtype): the
    /// reference the fused CPU kernel is tested against.
    ///
    /// # Shapes
    /// As [`step`](Self::step).
    ///
    /// # Errors
    /// As [`step`](Self::step).
    pub fn step_reference(&self, x: &Tensor, h: &Tensor, c: &Tensor) -> Result<(Tensor, Tensor)> {
        if x.dims4()?.1 != self.input {
            return Err(shape(
                "ConvLstmCell",
                format!("input (B, {}, H, W)", self.input),
                x.dims(),
            ));
        }
        let gates = self.conv.forward(&Tensor::cat(&[x, h], 1)?)?;
        if let Some(norm) = &self.norm {
            return self.normalised_gates(norm, &gates, c);
        }
        self.gates_reference(&gates, c)
    }

    fn normalised_gates(
        &self,
        norm: &CellNorm,
        gates: &Tensor,
        c: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let hd = self.hidden;
        let gate = |k: usize| norm.apply(&gates.narrow(1, k * hd, hd)?, k);
        let i = candle_nn::ops::sigmoid(&gate(0)?)?;
        let f = candle_nn::ops::sigmoid(&(gate(1)? + FORGET_BIAS)?)?;
        let o = candle_nn::ops::sigmoid(&gate(2)?)?;
        let g = gate(3)?.tanh()?;
        let c2 = norm.apply(&((f * c)? + (i * g)?)?, 4)?;
        let h2 = (o * c2.tanh()?)?;
        Ok((h2, c2))
    }

    fn gates_reference(&self, gates: &Tensor, c: &Tensor) -> Result<(Tensor, Tensor)> {
        let hd = self.hidden;
        let i = candle_nn::ops::sigmoid(&gates.narrow(1, 0, hd)?)?;
        let f = candle_nn::ops::sigmoid(&gates.narrow(1, hd, hd)?)?;
        let o = candle_nn::ops::sigmoid(&gates.narrow(1, 2 * hd, hd)?)?;
        let g = gates.narrow(1, 3 * hd, hd)?.tanh()?;
        let c2 = ((f * c)? + (i * g)?)?;
        let h2 = (o * c2.tanh()?)?;
        Ok((h2, c2))
    }
}

/// A ConvGRU cell: `r = σ(reset([x, h]))`, `z = σ(update([x, h]))`,
/// `n = tanh(out([x, r h]))`, `h' = (1 - z) h + z n`.
#[derive(Debug, Clone)]
pub struct ConvGruCell {
    reset_gate: SameConv,
    update_gate: SameConv,
    out_gate: SameConv,
    input: usize,
    /// Layer normalisation of the r, z and candidate pre-activations (TensorFlow MTLCC).
    norm: Option<CellNorm>,
}

impl ConvGruCell {
    /// `input` channels in, `hidden` channels of state, odd `kernel` size.
    ///
    /// # Errors
    /// Even kernels, zero sizes, variables that cannot be created.
    pub fn new(
        input: usize,
        hidden: usize,
        kernel: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        if input == 0 || hidden == 0 {
            return Err(invalid("ConvGruCell", "channel counts must be positive"));
        }
        let c = input + hidden;
        Ok(ConvGruCell {
            reset_gate: SameConv::new(c, hidden, kernel, bias, vb.pp("reset_gate"))?,
            update_gate: SameConv::new(c, hidden, kernel, bias, vb.pp("update_gate"))?,
            out_gate: SameConv::new(c, hidden, kernel, bias, vb.pp("out_gate"))?,
            input,
            norm: None,
        })
    }

    /// A cell with layer normalisation inside, the TensorFlow MTLCC ConvGRU
    /// (`MarcCoru/tensorflow-convlstm-cell`, `ConvGRUCell` with `normalize=True`): the three
    /// convolutions have no bias; the reset and update pre-activations and the candidate's are
    /// normalised per sample over (hidden, H, W) with variance epsilon 1e-12 and scaled/shifted
    /// per channel: `r = σ(LN_r(r̃))`, `z = σ(LN_z(z̃))`, `n = tanh(LN_n(out([x, r h])))`,
    /// `h' = (1 - z) h + z n`. TensorFlow writes the update as `h' = u h + (1 - u) n`, so its
    /// `u` is `1 - z` here: a TensorFlow model's `LN_u` gain and shift load negated into
    /// `ln_z`. Variables: `{reset,update,out}_gate.weight`, `ln_{r,z,n}.{weight,bias}` (ones and
    /// zeros).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_layer_norm(
        input: usize,
        hidden: usize,
        kernel: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut cell = Self::new(input, hidden, kernel, false, vb.clone())?;
        cell.norm = Some(CellNorm::new(hidden, GRU_NORMS, &vb)?);
        Ok(cell)
    }

    /// One step from state `h`.
    ///
    /// # Shapes
    /// `x`: `(B, input, H, W)`, `h`: `(B, hidden, H, W)` -> `h'`.
    ///
    /// # Errors
    /// Shape errors.
    pub fn step(&self, x: &Tensor, h: &Tensor) -> Result<Tensor> {
        if x.dims4()?.1 != self.input {
            return Err(shape(
                "ConvGruCell",
                format!("input (B, {}, H, W)", self.input),
                x.dims(),
            ));
        }
        // the pre-activation `k` of the normalised quantities, or `y` itself without norm
        let norm = |y: Tensor, k: usize| match &self.norm {
            Some(n) => n.apply(&y, k),
            None => Ok(y),
        };
        let xh = crate::ops::cat_channels(x, h)?;
        let r = candle_nn::ops::sigmoid(&norm(self.reset_gate.forward(&xh)?, 0)?)?;
        let z = candle_nn::ops::sigmoid(&norm(self.update_gate.forward(&xh)?, 1)?)?;
        let n = norm(
            self.out_gate
                .forward(&crate::ops::cat_channels(x, &(h * r)?)?)?,
            2,
        )?
        .tanh()?;
        Ok(((h - (&z * h)?)? + (z * n)?)?)
    }
}

/// Direction handling of a [`ConvRnn`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bidirectional {
    /// Forward in time only.
    #[default]
    No,
    /// A second cell (names prefixed `backward.`) reads the sequence reversed.
    Separate,
    /// The same cell reads the sequence forward and reversed (MTLCC).
    Shared,
}

/// The cell of a [`ConvRnn`].
#[derive(Debug, Clone)]
pub enum ConvCell {
    /// ConvLSTM.
    Lstm(ConvLstmCell),
    /// ConvGRU.
    Gru(ConvGruCell),
}

/// Output of a [`ConvRnn`] layer.
#[derive(Debug, Clone)]
pub struct ConvRnnOutput {
    /// Hidden states at every step, `(B, T, D * hidden, H, W)` (directions concatenated).
    pub hidden_states: Tensor,
    /// Final hidden state per direction, each `(B, hidden, H, W)`.
    pub last_hidden: Vec<Tensor>,
}

/// A convolutional recurrent layer over image time series.
#[derive(Debug, Clone)]
pub struct ConvRnn {
    forward: ConvCell,
    backward: Option<ConvCell>,
    direction: Bidirectional,
    hidden: usize,
}

impl ConvRnn {
    /// A ConvLSTM or ConvGRU layer (`gru`), named `forward.*` (and `backward.*` for
    /// [`Bidirectional::Separate`]).
    ///
    /// # Errors
    /// As the cells.
    pub fn new(
        input: usize,
        hidden: usize,
        kernel: usize,
        gru: bool,
        direction: Bidirectional,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::from_cells(hidden, direction, vb, |vb| {
            Ok(if gru {
                ConvCell::Gru(ConvGruCell::new(input, hidden, kernel, true, vb)?)
            } else {
                ConvCell::Lstm(ConvLstmCell::new(input, hidden, kernel, true, vb)?)
            })
        })
    }

    /// A ConvLSTM layer whose cells normalise inside ([`ConvLstmCell::with_layer_norm`]),
    /// named like [`new`](Self::new).
    ///
    /// # Errors
    /// As the cells.
    pub fn lstm_with_layer_norm(
        input: usize,
        hidden: usize,
        kernel: usize,
        direction: Bidirectional,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::from_cells(hidden, direction, vb, |vb| {
            Ok(ConvCell::Lstm(ConvLstmCell::with_layer_norm(
                input, hidden, kernel, vb,
            )?))
        })
    }

    /// A ConvGRU layer whose cells normalise inside ([`ConvGruCell::with_layer_norm`]), named
    /// like [`new`](Self::new).
    ///
    /// # Errors
    /// As the cells.
    pub fn gru_with_layer_norm(
        input: usize,
        hidden: usize,
        kernel: usize,
        direction: Bidirectional,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::from_cells(hidden, direction, vb, |vb| {
            Ok(ConvCell::Gru(ConvGruCell::with_layer_norm(
                input, hidden, kernel, vb,
            )?))
        })
    }

    /// The layer from a cell constructor: `forward.*`, and `backward.*` for separate weights.
    fn from_cells(
        hidden: usize,
        direction: Bidirectional,
        vb: VarBuilder,
        make: impl Fn(VarBuilder) -> Result<ConvCell>,
    ) -> Result<Self> {
        let forward = make(vb.pp("forward"))?;
        let backward = if direction == Bidirectional::Separate {
            Some(make(vb.pp("backward"))?)
        } else {
            None
        };
        Ok(ConvRnn {
            forward,
            backward,
            direction,
            hidden,
        })
    }

    fn run(&self, cell: &ConvCell, x: &Tensor, reverse: bool) -> Result<(Vec<Tensor>, Tensor)> {
        let (b, t, _, h, w) = x.dims5()?;
        let zero = Tensor::zeros((b, self.hidden, h, w), x.dtype(), x.device())?;
        let (mut hs, mut cs) = (zero.clone(), zero);
        let mut out = vec![hs.clone(); t];
        let order: Vec<usize> = if reverse {
            (0..t).rev().collect()
        } else {
            (0..t).collect()
        };
        for s in order {
            let xs = x.narrow(1, s, 1)?.squeeze(1)?;
            match cell {
                ConvCell::Lstm(c) => (hs, cs) = c.step(&xs, &hs, &cs)?,
                ConvCell::Gru(c) => hs = c.step(&xs, &hs)?,
            }
            out[s] = hs.clone();
        }
        Ok((out, hs))
    }

    /// Runs the layer from zero states.
    ///
    /// # Shapes
    /// `x`: `(B, T, C, H, W)` -> see [`ConvRnnOutput`].
    ///
    /// # Errors
    /// Shape errors.
    pub fn forward(&self, x: &Tensor) -> Result<ConvRnnOutput> {
        x.dims5()
            .map_err(|_| shape("ConvRnn", "input (B, T, C, H, W)", x.dims()))?;
        let (fwd, last_f) = self.run(&self.forward, x, false)?;
        let (steps, last_hidden) = match self.direction {
            Bidirectional::No => (fwd, vec![last_f]),
            Bidirectional::Separate | Bidirectional::Shared => {
                let cell = self.backward.as_ref().unwrap_or(&self.forward);
                let (bwd, last_b) = self.run(cell, x, true)?;
                let steps = fwd
                    .iter()
                    .zip(&bwd)
                    .map(|(a, b)| Tensor::cat(&[a, b], 1))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                (steps, vec![last_f, last_b])
            }
        };
        let hidden_states = Tensor::stack(&steps, 1)?;
        Ok(ConvRnnOutput {
            hidden_states,
            last_hidden,
        })
    }
}
