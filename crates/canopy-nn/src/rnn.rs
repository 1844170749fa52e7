//! Stacked, optionally bidirectional LSTM and GRU with PyTorch's parameter names
//! (`weight_ih_l{k}[_reverse]`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`), inter-layer
//! dropout, per-sequence lengths, and every hidden (and cell) state returned for inspection.
//!
//! candle's `rnn::LSTM` is one layer and one direction (its `Direction::Backward` only renames the
//! weights; it does not reverse the sequence), with no dropout between layers and no masks; its
//! GRU names only layer 0.
//!
//! With `lengths`, the result equals PyTorch's `pack_padded_sequence` → `nn.LSTM` →
//! `pad_packed_sequence`: the forward direction stops at each sequence's last valid step, the
//! reverse direction starts there, outputs at padded steps are zero, and `h_n`/`c_n` hold the
//! states at the last valid step.
//!
//! # References
//! Hochreiter & Schmidhuber 1997 (LSTM); Cho et al. 2014 (GRU); PyTorch `torch.nn.LSTM`
//! (gate order i, f, g, o) and `torch.nn.GRU` (r, z, n; `b_hn` inside the reset product).

use candle_core::{DType, Tensor, D};
use candle_nn::{Init, VarBuilder};
use rand::Rng;

use crate::error::{invalid, shape};
use crate::ops::lstm_kernel::LstmBiLayerOp;
use crate::{Dropout, Result};

/// Configuration of an [`Lstm`] or a [`Gru`], named like PyTorch's arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct LstmConfig {
    /// `input_size`.
    pub input_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `num_layers`.
    pub num_layers: usize,
    /// `bias`.
    pub bias: bool,
    /// `dropout` between layers (not after the last), in training.
    pub dropout: f64,
    /// `bidirectional`.
    pub bidirectional: bool,
}

impl Default for LstmConfig {
    fn default() -> Self {
        LstmConfig {
            input_size: 1,
            hidden_size: 1,
            num_layers: 1,
            bias: true,
            dropout: 0.0,
            bidirectional: false,
        }
    }
}

#[derive(Debug, Clone)]
struct Direction {
    w_ih: Tensor,
    w_hh: Tensor,
    /// `bias_ih` and `bias_hh`, kept apart (summed at run time, so loaded weights are used).
    b: Option<(Tensor, Tensor)>,
}

/// Everything an [`Lstm`] or [`Gru`] computes.
#[derive(Debug, Clone)]
pub struct RnnOutput {
    /// Last layer's hidden states, `(B, T, D * H)` (zeros at padded steps).
    pub output: Tensor,
    /// Final hidden state per layer and direction, `(num_layers * D, B, H)` (PyTorch order).
    pub h_n: Tensor,
    /// Final cell state, `(num_layers * D, B, H)` (LSTM only).
    pub c_n: Option<Tensor>,
    /// Hidden states of every layer, each `(B, T, D * H)`.
    pub hidden_states: Vec<Tensor>,
    /// Cell states of every layer, each `(B, T, D * H)` (LSTM only; empty for a GRU).
    pub cell_states: Vec<Tensor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Lstm,
    Gru,
}

impl Kind {
    fn gates(self) -> usize {
        match self {
            Kind::Lstm => 4,
            Kind::Gru => 3,
        }
    }
}

/// The shared stacked/bidirectional recurrence.
#[derive(Debug, Clone)]
struct Stack {
    kind: Kind,
    layers: Vec<Vec<Direction>>,
    dropout: Dropout,
    cfg: LstmConfig,
}

/// A stacked (bidirectional) LSTM, batch-first.
#[derive(Debug, Clone)]
pub struct Lstm(Stack);

/// A stacked (bidirectional) GRU, batch-first, every layer named (`weight_ih_l{k}`...).
#[derive(Debug, Clone)]
pub struct Gru(Stack);

impl Lstm {
    /// Builds the LSTM; parameters are initialised like PyTorch's, `U(-1/sqrt(H), 1/sqrt(H))`.
    ///
    /// # Errors
    /// Zero sizes, a dropout outside `[0, 1)`, or variables that cannot be created.
    pub fn new(cfg: &LstmConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Lstm(Stack::new(Kind::Lstm, cfg, vb)?))
    }

    /// The configuration.
    pub fn config(&self) -> &LstmConfig {
        &self.0.cfg
    }

    /// Runs the LSTM from zero initial states. `lengths` (one per sequence, each in `1..=T`)
    /// masks padded steps. On the CPU in f32/f64 each layer (all directions) is one fused op
    /// ([`lstm_kernel`](crate::ops::lstm_kernel)); elsewhere the steps are composed candle ops
    /// as in [`forward_t_reference`](Self::forward_t_reference).
    ///
    /// # Shapes
    /// `x`: `(B, T, input_size)` -> see [`RnnOutput`].
    ///
    /// # Errors
    /// Shape errors; lengths out of range.
    pub fn forward_t<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
        rng: &mut R,
    ) -> Result<RnnOutput> {
        self.0.forward_t(x, lengths, train, rng, true)
    }

    /// The same computation from composed candle ops, step by step (any device and dtype; much
    /// slower on the CPU, especially backward): the reference the fused kernel is tested against.
    ///
    /// # Shapes
    /// As [`forward_t`](Self::forward_t).
    ///
    /// # Errors
    /// As [`forward_t`](Self::forward_t).
    pub fn forward_t_reference<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
        rng: &mut R,
    ) -> Result<RnnOutput> {
        self.0.forward_t(x, lengths, train, rng, false)
    }
}

impl Gru {
    /// Builds the GRU; parameters are initialised like PyTorch's, `U(-1/sqrt(H), 1/sqrt(H))`.
    ///
    /// # Errors
    /// Zero sizes, a dropout outside `[0, 1)`, or variables that cannot be created.
    pub fn new(cfg: &LstmConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Gru(Stack::new(Kind::Gru, cfg, vb)?))
    }

    /// The configuration.
    pub fn config(&self) -> &LstmConfig {
        &self.0.cfg
    }

    /// Runs the GRU from zero initial states; as [`Lstm::forward_t`] without cell states.
    ///
    /// # Shapes
    /// `x`: `(B, T, input_size)` -> see [`RnnOutput`].
    ///
    /// # Errors
    /// Shape errors; lengths out of range.
    pub fn forward_t<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
        rng: &mut R,
    ) -> Result<RnnOutput> {
        self.0.forward_t(x, lengths, train, rng, false)
    }
}

impl Stack {
    fn new(kind: Kind, cfg: &LstmConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.input_size == 0 || cfg.hidden_size == 0 || cfg.num_layers == 0 {
            return Err(invalid(
                "recurrent layer",
                format!("sizes must be positive: {cfg:?}"),
            ));
        }
        let ng = kind.gates();
        let h = cfg.hidden_size;
        let bound = 1.0 / (h as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let dirs = if cfg.bidirectional { 2 } else { 1 };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for k in 0..cfg.num_layers {
            let in_dim = if k == 0 { cfg.input_size } else { h * dirs };
            let mut ds = Vec::with_capacity(dirs);
            for d in 0..dirs {
                let sfx = if d == 0 {
                    format!("l{k}")
                } else {
                    format!("l{k}_reverse")
                };
                let w_ih =
                    vb.get_with_hints((ng * h, in_dim), &format!("weight_ih_{sfx}"), init)?;
                let w_hh = vb.get_with_hints((ng * h, h), &format!("weight_hh_{sfx}"), init)?;
                let b = if cfg.bias {
                    let b_ih = vb.get_with_hints(ng * h, &format!("bias_ih_{sfx}"), init)?;
                    let b_hh = vb.get_with_hints(ng * h, &format!("bias_hh_{sfx}"), init)?;
                    Some((b_ih, b_hh))
                } else {
                    None
                };
                ds.push(Direction { w_ih, w_hh, b });
            }
            layers.push(ds);
        }
        Ok(Stack {
            kind,
            layers,
            dropout: Dropout::new(cfg.dropout)?,
            cfg: cfg.clone(),
        })
    }

    fn forward_t<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
        rng: &mut R,
        fused: bool,
    ) -> Result<RnnOutput> {
        let op = match self.kind {
            Kind::Lstm => "Lstm",
            Kind::Gru => "Gru",
        };
        let (b, t, c) = x
            .dims3()
            .map_err(|_| shape(op, "input (B, T, input_size)", x.dims()))?;
        if c != self.cfg.input_size {
            return Err(shape(
                op,
                format!("input (B, T, {})", self.cfg.input_size),
                x.dims(),
            ));
        }
        // (T, B, 1) validity mask
        let mask = match lengths {
            None => None,
            Some(l) => {
                if l.len() != b || l.iter().any(|&n| n == 0 || n > t) {
                    return Err(invalid(
                        op,
                        format!("lengths {l:?} must be {b} values in 1..={t}"),
                    ));
                }
                let v: Vec<f64> = (0..t)
                    .flat_map(|s| l.iter().map(move |&n| if s < n { 1.0 } else { 0.0 }))
                    .collect();
                Some(Tensor::from_vec(v, (t, b, 1), x.device())?.to_dtype(x.dtype())?)
            }
        };
        let h = self.cfg.hidden_size;
        let mut input = x.clone();
        let (mut h_n, mut c_n, mut hidden_states, mut cell_states) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (k, dirs) in self.layers.iter().enumerate() {
            if k > 0 {
                input = self.dropout.forward_t(&input, train, rng)?;
            }
            // the fused LSTM kernel takes the raw input and runs the whole layer, every
            // direction (projection, biases and recurrence in one op)
            if fused && self.kind == Kind::Lstm && fused_lstm_applies(&input) {
                let (out, cell, h_last, c_last) = fused_lstm_layer(&input, dirs, lengths)?;
                h_n.extend(h_last);
                c_n.extend(c_last);
                hidden_states.push(out.clone());
                cell_states.push(cell);
                input = out;
                continue;
            }
            let (mut outs, mut cells) = (Vec::new(), Vec::new());
            for (d, dir) in dirs.iter().enumerate() {
                // input projections for all steps at once: (B, T, gates * H); the LSTM folds both
                // biases in here, the GRU keeps b_hh for the reset product
                let mut xw = crate::linear::linear_forward(&input, &dir.w_ih, None)?;
                if let Some((b_ih, b_hh)) = &dir.b {
                    xw = match self.kind {
                        Kind::Lstm => xw.broadcast_add(&(b_ih + b_hh)?)?,
                        Kind::Gru => xw.broadcast_add(b_ih)?,
                    };
                }
                let mut hs = Tensor::zeros((b, h), x.dtype(), x.device())?;
                let mut cs = hs.clone();
                let mut steps_h: Vec<Tensor> = vec![hs.clone(); t];
                let mut steps_c: Vec<Tensor> = vec![cs.clone(); t];
                let order: Vec<usize> = if d == 0 {
                    (0..t).collect()
                } else {
                    (0..t).rev().collect()
                };
                let w_hh_t = dir.w_hh.t()?;
                for s in order {
                    let xs = xw.narrow(1, s, 1)?.squeeze(1)?;
                    let hw = hs.matmul(&w_hh_t)?;
                    let (h_new, c_new) = match self.kind {
                        Kind::Lstm => {
                            let gates = (xs + hw)?; // (B, 4H): i, f, g, o
                            let i = candle_nn::ops::sigmoid(&gates.narrow(1, 0, h)?)?;
                            let f = candle_nn::ops::sigmoid(&gates.narrow(1, h, h)?)?;
                            let g = gates.narrow(1, 2 * h, h)?.tanh()?;
                            let o = candle_nn::ops::sigmoid(&gates.narrow(1, 3 * h, h)?)?;
                            let c_new = ((f * &cs)? + (i * g)?)?;
                            ((o * c_new.tanh()?)?, c_new)
                        }
                        Kind::Gru => {
                            let hw = match &dir.b {
                                Some((_, b_hh)) => hw.broadcast_add(b_hh)?,
                                None => hw,
                            }; // (B, 3H): r, z, n
                            let r = candle_nn::ops::sigmoid(
                                &(xs.narrow(1, 0, h)? + hw.narrow(1, 0, h)?)?,
                            )?;
                            let z = candle_nn::ops::sigmoid(
                                &(xs.narrow(1, h, h)? + hw.narrow(1, h, h)?)?,
                            )?;
                            let n = (xs.narrow(1, 2 * h, h)? + (r * hw.narrow(1, 2 * h, h)?)?)?
                                .tanh()?;
                            let h_new = ((&n - (&z * &n)?)? + (&z * &hs)?)?; // (1 - z) n + z h
                            (h_new, cs.clone())
                        }
                    };
                    match &mask {
                        None => {
                            hs = h_new;
                            cs = c_new;
                            steps_h[s] = hs.clone();
                            steps_c[s] = cs.clone();
                        }
                        Some(m) => {
                            let m = m.narrow(0, s, 1)?.squeeze(0)?; // (B, 1)
                            let keep = (1.0 - &m)?;
                            hs = (h_new.broadcast_mul(&m)? + hs.broadcast_mul(&keep)?)?;
                            cs = (c_new.broadcast_mul(&m)? + cs.broadcast_mul(&keep)?)?;
                            steps_h[s] = hs.broadcast_mul(&m)?;
                            steps_c[s] = cs.broadcast_mul(&m)?;
                        }
                    }
                }
                h_n.push(hs);
                c_n.push(cs);
                outs.push(Tensor::stack(&steps_h, 1)?); // (B, T, H)
                cells.push(Tensor::stack(&steps_c, 1)?);
            }
            let out = if outs.len() == 1 {
                outs.remove(0)
            } else {
                Tensor::cat(&outs, D::Minus1)?
            };
            let cell = if cells.len() == 1 {
                cells.remove(0)
            } else {
                Tensor::cat(&cells, D::Minus1)?
            };
            hidden_states.push(out.clone());
            if self.kind == Kind::Lstm {
                cell_states.push(cell);
            }
            input = out;
        }
        Ok(RnnOutput {
            output: input,
            h_n: Tensor::stack(&h_n, 0)?,
            c_n: match self.kind {
                Kind::Lstm => Some(Tensor::stack(&c_n, 0)?),
                Kind::Gru => None,
            },
            hidden_states,
            cell_states,
        })
    }
}

/// Whether the fused CPU kernel of [`lstm_kernel`](crate::ops::lstm_kernel) runs this layer.
fn fused_lstm_applies(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// One LSTM layer (all directions) through the fused kernel: `input` `(B, T, C)` -> hidden
/// and cell states `(B, T, D * H)` (forward half first, zeros at padded steps) and the final
/// `(B, H)` hidden and cell states per direction.
#[allow(clippy::type_complexity)]
fn fused_lstm_layer(
    input: &Tensor,
    dirs: &[Direction],
    lengths: Option<&[usize]>,
) -> Result<(Tensor, Tensor, Vec<Tensor>, Vec<Tensor>)> {
    let (b, t, _) = input.dims3()?;
    let Some(first) = dirs.first() else {
        return Err(invalid("Lstm", "a layer without directions"));
    };
    let h = first.w_hh.dim(1)?;
    let nd = dirs.len();
    let w = dirs
        .iter()
        .map(|dir| Tensor::cat(&[&dir.w_ih, &dir.w_hh], 1)) // (4H, C + H)
        .collect::<candle_core::Result<Vec<_>>>()?;
    let w = Tensor::stack(&w, 0)?; // (D, 4H, C + H)
    let bias = match &first.b {
        Some(_) => {
            let bs = dirs
                .iter()
                .map(|dir| match &dir.b {
                    Some((b_ih, b_hh)) => b_ih + b_hh,
                    None => Tensor::zeros(4 * h, input.dtype(), input.device()),
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::stack(&bs, 0)?
        }
        None => Tensor::zeros((nd, 4 * h), input.dtype(), input.device())?,
    };
    let op = LstmBiLayerOp::new(h, lengths.map(<[usize]>::to_vec));
    let packed = input
        .contiguous()?
        .apply_op3(&w.contiguous()?, &bias.contiguous()?, op)?; // (2, B, T, D·H)
    let hs = packed.get(0)?;
    let cs = packed.get(1)?;
    let (hs_rows, cs_rows) = (hs.reshape((b * t, nd * h))?, cs.reshape((b * t, nd * h))?);
    let (mut h_last, mut c_last) = (Vec::with_capacity(nd), Vec::with_capacity(nd));
    for d in 0..nd {
        // the final state: the last valid step going forward, step 0 going backward
        let last: Vec<u32> = (0..b)
            .map(|bi| {
                let len = lengths.and_then(|l| l.get(bi).copied()).unwrap_or(t);
                let s = if d == 1 { 0 } else { len.saturating_sub(1) };
                (bi * t + s) as u32
            })
            .collect();
        let last = Tensor::from_vec(last, b, input.device())?;
        h_last.push(hs_rows.index_select(&last, 0)?.narrow(1, d * h, h)?);
        c_last.push(cs_rows.index_select(&last, 0)?.narrow(1, d * h, h)?);
    }
    Ok((hs, cs, h_last, c_last))
}

/// Convenience: a `(B,)` u32 tensor of lengths as a vector.
///
/// # Errors
/// When the tensor is not 1-D.
pub fn lengths_from_tensor(t: &Tensor) -> Result<Vec<usize>> {
    Ok(t.to_dtype(DType::U32)?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|v| v as usize)
        .collect())
}
