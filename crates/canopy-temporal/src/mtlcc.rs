//! Convolutional recurrent encoders for image time series (MTLCC): per-pixel class logits from
//! `(B, T, C, H, W)` Sentinel-2 patches, robust to clouds without preprocessing.
//!
//! The model follows Rußwurm & Körner, "Multi-Temporal Land Cover Classification with
//! Sequential Recurrent Encoders" (ISPRS IJGI 7(4), 2018) and their NeurIPS 2018 workshop talk
//! "Convolutional LSTMs for Cloud-Robust Segmentation of Remote Sensing Imagery", whose hidden
//! states include some dedicated to masking clouds. Reference implementations: the TensorFlow
//! code `github.com/TUM-LMF/MTLCC` (bidirectional ConvLSTM/ConvGRU, layer normalisation in the
//! cell, variable sequence lengths) and its PyTorch port `github.com/TUM-LMF/MTLCC-pytorch`
//! (`src/models/sequenceencoder.py`: one forward ConvLSTM, no cell bias, head on the final
//! *cell* state).
//!
//! # Architecture
//! 1. `inconv`: a 3x3 convolution applied to every date separately (the port's `Conv3d` with a
//!    `(1, 3, 3)` kernel and one pixel of zero padding), `C -> hidden` channels.
//! 2. A ConvLSTM or ConvGRU cell (canopy-nn's [`ConvLstmCell`]/[`ConvGruCell`]) runs over the
//!    dates; with [`Direction::Shared`] the same cell also reads the sequence backwards (the
//!    TensorFlow model's weight sharing), with [`Direction::Separate`] a second cell does.
//!    Per-sample `lengths` stop the recurrence at each series' last valid date (padding after
//!    it is never read, in either direction).
//! 3. `final`: a 3x3 convolution (zero padding 1) from the final state(s) — the cell state `c`
//!    for ConvLSTM as in the port ([`HeadState::Cell`]), or `h` — to `K` class logits per pixel.
//!    The port ends in `Softmax2d`; this model returns the logits before it.
//!
//! # Weight names
//! `inconv.weight` `(hidden, C, 1, 3, 3)`, `inconv.bias`; `cell.conv.weight`
//! `(4 hidden, C_h + hidden, k, k)` (+ `cell.conv.bias` with `bias: true`;
//! `cell.ln_{i,f,o,g,c}.{weight,bias}` with layer norm; ConvGRU:
//! `cell.{reset_gate,update_gate,out_gate}.*`); `cell_bw.*` for separate backward weights;
//! `final.weight` `(K, D hidden, 3, 3)`, `final.bias`. With [`ConvRnnConfig::mtlcc_pytorch`]
//! these are exactly the PyTorch port's `state_dict` keys.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use canopy_nn::conv_rnn::{ConvGruCell, ConvLstmCell};
use canopy_nn::ops::{conv2d, Conv2dConfig};
use canopy_nn::pytorch_uniform;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const MODEL: &str = "ConvRnnClassifier";

/// The recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// ConvLSTM (Shi et al. 2015).
    #[default]
    Lstm,
    /// ConvGRU.
    Gru,
}

/// Which way(s) the cell reads the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Forward in time only (the PyTorch port).
    #[default]
    Forward,
    /// Forward and backward with one set of weights (the TensorFlow MTLCC model).
    Shared,
    /// Forward and backward with separate weights (`cell_bw.*`).
    Separate,
}

/// Which final state feeds the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HeadState {
    /// The ConvLSTM cell state `c` (the PyTorch port). A ConvGRU has no cell state: its
    /// hidden state is used.
    #[default]
    Cell,
    /// The hidden state `h`.
    Hidden,
}

/// Configuration of a [`ConvRnnClassifier`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvRnnConfig {
    /// Input bands `C`.
    pub input_dim: usize,
    /// Classes `K`.
    pub num_classes: usize,
    /// Channels of the recurrent state (and of `inconv`'s output).
    pub hidden: usize,
    /// Odd kernel size of the recurrent convolution.
    pub kernel: usize,
    /// ConvLSTM or ConvGRU.
    pub cell: CellKind,
    /// Whether the recurrent convolution has a bias (the port: no). Ignored with layer norm,
    /// whose shift replaces it.
    pub bias: bool,
    /// Layer normalisation inside the cell, as in the TensorFlow MTLCC cells
    /// ([`ConvLstmCell::with_layer_norm`], [`ConvGruCell::with_layer_norm`]).
    pub layer_norm: bool,
    /// Reading direction(s).
    pub direction: Direction,
    /// State feeding the head.
    pub head_state: HeadState,
}

impl ConvRnnConfig {
    /// The PyTorch port (`LSTMSequentialEncoder` defaults): hidden 64, 3x3 kernels, forward
    /// ConvLSTM without bias, head on the final cell state. Its weights load unchanged.
    pub fn mtlcc_pytorch(input_dim: usize, num_classes: usize) -> Self {
        ConvRnnConfig {
            input_dim,
            num_classes,
            hidden: 64,
            kernel: 3,
            cell: CellKind::Lstm,
            bias: false,
            layer_norm: false,
            direction: Direction::Forward,
            head_state: HeadState::Cell,
        }
    }

    /// The recurrent part of the TensorFlow MTLCC model (`TUM-LMF/MTLCC`,
    /// `modelzoo/seqencmodel.py` with `convcell=lstm`, `bidirectional=True`): a ConvLSTM read
    /// both ways with shared weights, its cell the TensorFlow one with layer normalisation
    /// ([`ConvLstmCell::with_layer_norm`]: epsilon 1e-12, forget bias 1; checked against a
    /// float64 re-implementation in `tools/golden/temporal_mtlcc.py`), the head on the
    /// concatenated final cell states of both directions. Where it differs from that model:
    /// it keeps the port's `inconv` (the TensorFlow model feeds the bands, plus day-of-year
    /// and year channels, straight into the cell) and the port's head (a 3x3 convolution with
    /// zero padding and bias, where TensorFlow uses a reflect-padded convolution without bias,
    /// batch norm and leaky ReLU), and the width is the port's 64 (TensorFlow's flag defaults
    /// to 24). The TensorFlow code's default cell is a ConvGRU: set `cell: CellKind::Gru` for
    /// its layer-normalised ConvGRU.
    pub fn mtlcc(input_dim: usize, num_classes: usize) -> Self {
        ConvRnnConfig {
            layer_norm: true,
            direction: Direction::Shared,
            ..Self::mtlcc_pytorch(input_dim, num_classes)
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Config {
                model: MODEL,
                message,
            })
        };
        if self.input_dim == 0 || self.num_classes == 0 || self.hidden == 0 {
            return bad(format!(
                "input_dim {}, num_classes {} and hidden {} must all be positive",
                self.input_dim, self.num_classes, self.hidden
            ));
        }
        if self.kernel % 2 == 0 {
            return bad(format!("kernel {} must be odd", self.kernel));
        }
        Ok(())
    }

    fn directions(&self) -> usize {
        if self.direction == Direction::Forward {
            1
        } else {
            2
        }
    }
}

#[derive(Debug, Clone)]
enum Cell {
    Lstm(ConvLstmCell),
    Gru(ConvGruCell),
}

/// The recurrent states of one reading direction at every date, for explainability.
#[derive(Debug, Clone)]
pub struct StateSequence {
    /// Hidden states `(B, T, hidden, H, W)`; dates after a series' length hold the state at
    /// its last valid date.
    pub hidden: Tensor,
    /// ConvLSTM cell states `(B, T, hidden, H, W)` (`None` for ConvGRU).
    pub cell: Option<Tensor>,
}

/// Output of [`ConvRnnClassifier::forward_with_states`].
#[derive(Debug, Clone)]
pub struct ConvRnnOutput {
    /// Per-pixel class logits `(B, K, H, W)`.
    pub logits: Tensor,
    /// The state sequences, forward direction first.
    pub states: Vec<StateSequence>,
}

/// The MTLCC convolutional recurrent encoder (see the module docs).
#[derive(Debug, Clone)]
pub struct ConvRnnClassifier {
    cfg: ConvRnnConfig,
    inconv_weight: Tensor,
    inconv_bias: Tensor,
    forward_cell: Cell,
    backward_cell: Option<Cell>,
    final_weight: Tensor,
    final_bias: Tensor,
}

impl ConvRnnClassifier {
    /// Creates the model's variables in `vb` (PyTorch's default initialisation).
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes or even kernels.
    pub fn new(cfg: &ConvRnnConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (c, hd, k) = (cfg.input_dim, cfg.hidden, cfg.num_classes);
        let inconv = vb.pp("inconv");
        let in_init = pytorch_uniform(c * 9);
        let inconv_weight = inconv.get_with_hints((hd, c, 1, 3, 3), "weight", in_init)?;
        let inconv_bias = inconv.get_with_hints(hd, "bias", in_init)?;
        let make = |vb: VarBuilder| -> Result<Cell> {
            Ok(match (cfg.cell, cfg.layer_norm) {
                (CellKind::Lstm, false) => {
                    Cell::Lstm(ConvLstmCell::new(hd, hd, cfg.kernel, cfg.bias, vb)?)
                }
                (CellKind::Lstm, true) => {
                    Cell::Lstm(ConvLstmCell::with_layer_norm(hd, hd, cfg.kernel, vb)?)
                }
                (CellKind::Gru, false) => {
                    Cell::Gru(ConvGruCell::new(hd, hd, cfg.kernel, cfg.bias, vb)?)
                }
                (CellKind::Gru, true) => {
                    Cell::Gru(ConvGruCell::with_layer_norm(hd, hd, cfg.kernel, vb)?)
                }
            })
        };
        let forward_cell = make(vb.pp("cell"))?;
        let backward_cell = if cfg.direction == Direction::Separate {
            Some(make(vb.pp("cell_bw"))?)
        } else {
            None
        };
        let head_in = cfg.directions() * hd;
        let fin = vb.pp("final");
        let f_init = pytorch_uniform(head_in * 9);
        let final_weight = fin.get_with_hints((k, head_in, 3, 3), "weight", f_init)?;
        let final_bias = fin.get_with_hints(k, "bias", f_init)?;
        Ok(ConvRnnClassifier {
            cfg: cfg.clone(),
            inconv_weight,
            inconv_bias,
            forward_cell,
            backward_cell,
            final_weight,
            final_bias,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConvRnnConfig {
        &self.cfg
    }

    /// Per-pixel class logits.
    ///
    /// `lengths` (one per series, each in `1..=T`) marks the valid dates of series padded at
    /// the end; `None` means all `T` dates are valid.
    ///
    /// # Shapes
    /// `x`: `(B, T, C, H, W)` -> `(B, K, H, W)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not 5-D with `C` bands or `lengths` does not fit.
    pub fn forward(&self, x: &Tensor, lengths: Option<&[usize]>) -> Result<Tensor> {
        Ok(self.run(x, lengths, false)?.logits)
    }

    /// As [`forward`](Self::forward), also returning the hidden (and cell) states at every
    /// date of each direction — where the seeds found states that mask clouds.
    ///
    /// # Shapes
    /// `x`: `(B, T, C, H, W)` -> logits `(B, K, H, W)`, states `(B, T, hidden, H, W)` each.
    ///
    /// # Errors
    /// As [`forward`](Self::forward).
    pub fn forward_with_states(
        &self,
        x: &Tensor,
        lengths: Option<&[usize]>,
    ) -> Result<ConvRnnOutput> {
        self.run(x, lengths, true)
    }

    fn run(&self, x: &Tensor, lengths: Option<&[usize]>, keep: bool) -> Result<ConvRnnOutput> {
        let (b, t, c, h, w) = x.dims5().map_err(|_| Error::Shape {
            model: MODEL,
            expected: format!("(B, T, {}, H, W) image series", self.cfg.input_dim),
            actual: format!("{:?}", x.dims()),
        })?;
        if c != self.cfg.input_dim || t == 0 || b == 0 {
            return Err(Error::Shape {
                model: MODEL,
                expected: format!(
                    "(B, T, {}, H, W) with B, T >= 1 (bands in the configured order)",
                    self.cfg.input_dim
                ),
                actual: format!("{:?}", x.dims()),
            });
        }
        let masks = self.step_masks(lengths, b, t, x)?;

        // every date through inconv at once: (B, T, C, H, W) -> (B·T, C, H, W)
        let hd = self.cfg.hidden;
        let w4 = self.inconv_weight.reshape((hd, c, 3, 3))?;
        let pad1 = Conv2dConfig::square(1, 1, 1, 1);
        let feats = conv2d(
            &x.reshape((b * t, c, h, w))?,
            &w4,
            Some(&self.inconv_bias),
            pad1,
        )?
        .reshape((b, t, hd, h, w))?;

        let mut finals = Vec::with_capacity(2);
        let mut states = Vec::new();
        let (last, seq) = self.direction(&self.forward_cell, &feats, &masks, false, keep)?;
        finals.push(last);
        states.extend(seq);
        if self.cfg.direction != Direction::Forward {
            let cell = self.backward_cell.as_ref().unwrap_or(&self.forward_cell);
            let (last, seq) = self.direction(cell, &feats, &masks, true, keep)?;
            finals.push(last);
            states.extend(seq);
        }
        let head_in = Tensor::cat(&finals, 1)?;
        let logits = conv2d(&head_in, &self.final_weight, Some(&self.final_bias), pad1)?;
        Ok(ConvRnnOutput { logits, states })
    }

    /// For each date `s`, a `(B, 1, 1, 1)` 0/1 mask of the series for which `s` is valid, or
    /// `None` when every series has all dates.
    fn step_masks(
        &self,
        lengths: Option<&[usize]>,
        b: usize,
        t: usize,
        x: &Tensor,
    ) -> Result<Option<Vec<Tensor>>> {
        let Some(lengths) = lengths else {
            return Ok(None);
        };
        if lengths.len() != b || lengths.iter().any(|&l| l == 0 || l > t) {
            return Err(Error::Shape {
                model: MODEL,
                expected: format!("{b} lengths, each in 1..={t}"),
                actual: format!("{lengths:?}"),
            });
        }
        if lengths.iter().all(|&l| l == t) {
            return Ok(None);
        }
        (0..t)
            .map(|s| {
                let m: Vec<f32> = lengths
                    .iter()
                    .map(|&l| f32::from(u8::from(s < l)))
                    .collect();
                Ok(Tensor::from_vec(m, (b, 1, 1, 1), x.device())?.to_dtype(x.dtype())?)
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Runs one direction; returns the head's input state and (if `keep`) the sequences.
    fn direction(
        &self,
        cell: &Cell,
        feats: &Tensor,
        masks: &Option<Vec<Tensor>>,
        reverse: bool,
        keep: bool,
    ) -> Result<(Tensor, Option<StateSequence>)> {
        let (b, t, hd, h, w) = feats.dims5()?;
        let zero = Tensor::zeros((b, hd, h, w), feats.dtype(), feats.device())?;
        let (mut hs, mut cs) = (zero.clone(), zero);
        let mut h_seq = Vec::with_capacity(if keep { t } else { 0 });
        let mut c_seq = Vec::with_capacity(if keep { t } else { 0 });
        let order: Vec<usize> = if reverse {
            (0..t).rev().collect()
        } else {
            (0..t).collect()
        };
        for &s in &order {
            let xs = feats.narrow(1, s, 1)?.squeeze(1)?;
            let (h_new, c_new) = match cell {
                Cell::Lstm(cell) => cell.step(&xs, &hs, &cs)?,
                Cell::Gru(cell) => {
                    let h_new = cell.step(&xs, &hs)?;
                    (h_new, cs.clone())
                }
            };
            (hs, cs) = match masks.as_ref().and_then(|m| m.get(s)) {
                // keep the old state where date s is padding: h = old + m (new - old)
                Some(m) => (
                    (&hs + (h_new - &hs)?.broadcast_mul(m)?)?,
                    (&cs + (c_new - &cs)?.broadcast_mul(m)?)?,
                ),
                None => (h_new, c_new),
            };
            if keep {
                h_seq.push(hs.clone());
                c_seq.push(cs.clone());
            }
        }
        let seq = if keep {
            if reverse {
                h_seq.reverse();
                c_seq.reverse();
            }
            Some(StateSequence {
                hidden: Tensor::stack(&h_seq, 1)?,
                cell: match cell {
                    Cell::Lstm(_) => Some(Tensor::stack(&c_seq, 1)?),
                    Cell::Gru(_) => None,
                },
            })
        } else {
            None
        };
        let head = match (cell, self.cfg.head_state) {
            (Cell::Lstm(_), HeadState::Cell) => cs,
            _ => hs,
        };
        Ok((head, seq))
    }

    /// The dtype of the model's variables.
    pub fn dtype(&self) -> DType {
        self.final_weight.dtype()
    }
}
