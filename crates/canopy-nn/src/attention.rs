//! Multi-head attention and Transformer encoder layers with PyTorch's parameter names and
//! layouts (`torch.nn.MultiheadAttention`, `torch.nn.TransformerEncoderLayer`), built on the
//! gradient-safe [`softmax`](crate::ops::softmax) and [`layer_norm`](crate::ops::layer_norm)
//! (candle's fused versions drop gradients; its `sdpa` has no CPU implementation).
//!
//! Attention weights are returned per head on request — the self-attention scores that show how
//! a time-series Transformer learns to ignore cloudy observations (Rußwurm & Körner 2020).
//!
//! # References
//! Vaswani et al. 2017, "Attention is all you need"; PyTorch `torch/nn/modules/activation.py`
//! and `transformer.py` for names, initialisation and the post-/pre-norm variants.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Init, VarBuilder};
use rand::Rng;

use crate::error::{invalid, shape};
use crate::init::pytorch_uniform;
use crate::linear::{linear_forward, linear_forward_composed, Linear};
use crate::ops::attention_kernel::AttentionOp;
use crate::ops::{softmax, LayerNorm};
use crate::{Dropout, Result};

pub use crate::linear::linear;

/// `torch.nn.MultiheadAttention` (self- or cross-attention), inputs batch-first.
///
/// Parameters: `in_proj_weight (3E, E)`, `in_proj_bias (3E)`, `out_proj.weight (E, E)`,
/// `out_proj.bias (E)`.
#[derive(Debug, Clone)]
pub struct MultiheadAttention {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: Linear,
    heads: usize,
    embed: usize,
    dropout: Dropout,
}

impl MultiheadAttention {
    /// `embed` features split over `heads` heads; `dropout` on the attention weights in training.
    ///
    /// # Errors
    /// When `heads` does not divide `embed`, or variables cannot be created.
    pub fn new(embed: usize, heads: usize, dropout: f64, vb: VarBuilder) -> Result<Self> {
        if heads == 0 || embed % heads != 0 {
            return Err(invalid(
                "MultiheadAttention",
                format!("{heads} heads must divide embed_dim {embed}"),
            ));
        }
        let xavier = (6.0 / (embed as f64 + 3.0 * embed as f64)).sqrt();
        let in_proj_weight = vb.get_with_hints(
            (3 * embed, embed),
            "in_proj_weight",
            Init::Uniform {
                lo: -xavier,
                up: xavier,
            },
        )?;
        let in_proj_bias = vb.get_with_hints(3 * embed, "in_proj_bias", Init::Const(0.0))?;
        let out_w =
            vb.pp("out_proj")
                .get_with_hints((embed, embed), "weight", pytorch_uniform(embed))?;
        let out_b = vb
            .pp("out_proj")
            .get_with_hints(embed, "bias", Init::Const(0.0))?;
        Ok(MultiheadAttention {
            in_proj_weight,
            in_proj_bias,
            out_proj: Linear::new(out_w, Some(out_b)),
            heads,
            embed,
            dropout: Dropout::new(dropout)?,
        })
    }

    /// Part `part` (0 = q, 1 = k, 2 = v) of the input projection; `fused` as in
    /// [`linear_forward`], else [`linear_forward_composed`].
    fn project(&self, x: &Tensor, part: usize, fused: bool) -> Result<Tensor> {
        let e = self.embed;
        let w = self.in_proj_weight.narrow(0, part * e, e)?;
        let b = self.in_proj_bias.narrow(0, part * e, e)?;
        if fused {
            linear_forward(x, &w, Some(&b))
        } else {
            linear_forward_composed(x, &w, Some(&b))
        }
    }

    /// Attends from `query` to `key`/`value`. `key_padding_mask` (`(B, S)`, non-zero = ignore
    /// that key) masks padded time steps. Returns the output and, when `need_weights`, the
    /// attention weights per head.
    ///
    /// On the CPU in f32/f64 (and without attention dropout in training) the attention core is
    /// one fused op ([`attention_kernel`](crate::ops::attention_kernel)); the weights it returns
    /// are then values without a gradient (for inspection: saliency goes through the inputs).
    ///
    /// # Shapes
    /// `query`: `(B, T, E)`, `key`/`value`: `(B, S, E)`, mask `(B, S)` -> `(B, T, E)` and
    /// `(B, heads, T, S)`.
    ///
    /// # Errors
    /// Shape errors stating the expected shapes.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_t<R: Rng + ?Sized>(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        key_padding_mask: Option<&Tensor>,
        need_weights: bool,
        train: bool,
        rng: &mut R,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.attend(
            query,
            key,
            value,
            key_padding_mask,
            need_weights,
            train,
            rng,
            true,
        )
    }

    /// [`forward_t`](Self::forward_t) composed from candle ops only (any device and dtype; the
    /// returned weights carry gradients): the reference the fused CPU kernel is tested against.
    ///
    /// # Shapes
    /// As [`forward_t`](Self::forward_t).
    ///
    /// # Errors
    /// As [`forward_t`](Self::forward_t).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_t_reference<R: Rng + ?Sized>(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        key_padding_mask: Option<&Tensor>,
        need_weights: bool,
        train: bool,
        rng: &mut R,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.attend(
            query,
            key,
            value,
            key_padding_mask,
            need_weights,
            train,
            rng,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn attend<R: Rng + ?Sized>(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        key_padding_mask: Option<&Tensor>,
        need_weights: bool,
        train: bool,
        rng: &mut R,
        allow_fused: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let op = "MultiheadAttention";
        let (b, t, e) = query
            .dims3()
            .map_err(|_| shape(op, "query (B, T, E)", query.dims()))?;
        let (kb, s, ke) = key
            .dims3()
            .map_err(|_| shape(op, "key (B, S, E)", key.dims()))?;
        if e != self.embed || ke != e || kb != b || value.dims() != key.dims() {
            return Err(shape(
                op,
                format!(
                    "query (B, T, {}) and key/value (B, S, {0}) of equal shape",
                    self.embed
                ),
                (query.dims(), key.dims(), value.dims()),
            ));
        }
        let (h, dh) = (self.heads, e / self.heads);
        let fused = allow_fused
            && query.device().is_cpu()
            && matches!(query.dtype(), DType::F32 | DType::F64);
        if fused {
            let key_mask = match key_padding_mask {
                None => None,
                Some(m) if m.dims() == [b, s] => Some(
                    m.to_dtype(DType::F64)?
                        .flatten_all()?
                        .to_vec1::<f64>()?
                        .into_iter()
                        .map(|v| v != 0.0)
                        .collect(),
                ),
                Some(m) => return Err(shape(op, format!("key_padding_mask ({b}, {s})"), m.dims())),
            };
            let mut attn_op = AttentionOp::new(h, 1.0 / (dh as f64).sqrt(), key_mask);
            let p = self.dropout.p();
            if train && p > 0.0 {
                // the same draws, in the same order, as `Dropout::forward_t` on (B, H, T, S)
                let keep = crate::dropout::keep_mask(rng, b * h * t * s, p);
                // the scale rounded through f32, as `Dropout` builds its mask
                attn_op = attn_op.with_dropout(keep, f64::from((1.0 / (1.0 - p)) as f32));
            }
            let self_attention = query.id() == key.id() && key.id() == value.id();
            let out = if self_attention {
                // one (B, T, 3E) projection [q | k | v], as PyTorch packs it
                linear_forward(query, &self.in_proj_weight, Some(&self.in_proj_bias))?
                    .apply_op1(attn_op.clone())?
            } else {
                let (q, k, v) = (
                    self.project(query, 0, true)?.contiguous()?,
                    self.project(key, 1, true)?.contiguous()?,
                    self.project(value, 2, true)?.contiguous()?,
                );
                q.apply_op3(&k, &v, attn_op.clone())?
            }; // (B, T, E), heads side by side
            let weights = if need_weights {
                Some(
                    attn_op
                        .probabilities((b * h, t, s))?
                        .reshape((b, h, t, s))?,
                )
            } else {
                None
            };
            return Ok((self.out_proj.forward(&out)?, weights));
        }
        let split = |x: Tensor, len: usize| -> Result<Tensor> {
            Ok(x.reshape((b, len, h, dh))?.transpose(1, 2)?.contiguous()?) // (B, L, E) -> (B, H, L, Dh)
        };
        let q = split(self.project(query, 0, allow_fused)?, t)?;
        let k = split(self.project(key, 1, allow_fused)?, s)?;
        let v = split(self.project(value, 2, allow_fused)?, s)?;
        let mut scores = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?; // (B, H, T, S)
        if let Some(m) = key_padding_mask {
            if m.dims() != [b, s] {
                return Err(shape(op, format!("key_padding_mask ({b}, {s})"), m.dims()));
            }
            let neg = m
                .to_dtype(candle_core::DType::F64)?
                .ne(0.0)?
                .where_cond(
                    &Tensor::full(f64::NEG_INFINITY, (b, s), m.device())?,
                    &Tensor::zeros((b, s), candle_core::DType::F64, m.device())?,
                )?
                .to_dtype(scores.dtype())?
                .reshape((b, 1, 1, s))?;
            scores = scores.broadcast_add(&neg)?;
        }
        let attn = softmax(&scores, D::Minus1)?;
        let attn_d = self.dropout.forward_t(&attn, train, rng)?;
        let out = attn_d
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, e))?; // (B, H, T, Dh) -> (B, T, E)
        let out = if allow_fused {
            self.out_proj.forward(&out)?
        } else {
            linear_forward_composed(&out, self.out_proj.weight(), self.out_proj.bias())?
        };
        Ok((out, need_weights.then_some(attn)))
    }
}

/// The feed-forward activation of a Transformer layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// ReLU (PyTorch's default).
    #[default]
    Relu,
    /// GELU, exact (erf) form as `F.gelu`.
    Gelu,
}

/// Where the layer norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormPosition {
    /// After each residual addition (`norm_first=False`, the original Transformer).
    #[default]
    Post,
    /// Before each sub-layer (`norm_first=True`).
    Pre,
}

/// Configuration of a [`TransformerEncoderLayer`], named like PyTorch's arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerEncoderLayerConfig {
    /// `d_model`.
    pub d_model: usize,
    /// `nhead`.
    pub nhead: usize,
    /// `dim_feedforward`.
    pub dim_feedforward: usize,
    /// `dropout`.
    pub dropout: f64,
    /// `activation`.
    pub activation: Activation,
    /// `layer_norm_eps`.
    pub layer_norm_eps: f64,
    /// `norm_first`.
    pub norm: NormPosition,
}

impl Default for TransformerEncoderLayerConfig {
    fn default() -> Self {
        TransformerEncoderLayerConfig {
            d_model: 512,
            nhead: 8,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: Activation::Relu,
            layer_norm_eps: 1e-5,
            norm: NormPosition::Post,
        }
    }
}

/// `torch.nn.TransformerEncoderLayer` (batch-first) with its parameter names: `self_attn.*`,
/// `linear1.*`, `linear2.*`, `norm1.*`, `norm2.*`.
#[derive(Debug, Clone)]
pub struct TransformerEncoderLayer {
    self_attn: MultiheadAttention,
    linear1: Linear,
    linear2: Linear,
    norm1: LayerNorm,
    norm2: LayerNorm,
    dropout: Dropout,
    cfg: TransformerEncoderLayerConfig,
}

impl TransformerEncoderLayer {
    /// Builds the layer.
    ///
    /// # Errors
    /// Invalid configuration, or variables that cannot be created.
    pub fn new(cfg: &TransformerEncoderLayerConfig, vb: VarBuilder) -> Result<Self> {
        Ok(TransformerEncoderLayer {
            self_attn: MultiheadAttention::new(
                cfg.d_model,
                cfg.nhead,
                cfg.dropout,
                vb.pp("self_attn"),
            )?,
            linear1: linear(cfg.d_model, cfg.dim_feedforward, true, vb.pp("linear1"))?,
            linear2: linear(cfg.dim_feedforward, cfg.d_model, true, vb.pp("linear2"))?,
            norm1: LayerNorm::new(cfg.d_model, cfg.layer_norm_eps, true, vb.pp("norm1"))?,
            norm2: LayerNorm::new(cfg.d_model, cfg.layer_norm_eps, true, vb.pp("norm2"))?,
            dropout: Dropout::new(cfg.dropout)?,
            cfg: cfg.clone(),
        })
    }

    fn feed_forward<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        train: bool,
        rng: &mut R,
    ) -> Result<Tensor> {
        let h = match self.cfg.activation {
            Activation::Relu => self.linear1.forward_relu(x)?,
            Activation::Gelu => crate::ops::gelu(&self.linear1.forward(x)?)?,
        };
        let h = self.dropout.forward_t(&h, train, rng)?;
        Ok(self.linear2.forward(&h)?)
    }

    /// Applies the layer; returns the output and the per-head self-attention weights.
    ///
    /// # Shapes
    /// `x`: `(B, T, d_model)`, mask `(B, T)` (non-zero = padding) -> `(B, T, d_model)` and
    /// `(B, nhead, T, T)`.
    ///
    /// # Errors
    /// Shape errors.
    pub fn forward_t<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        train: bool,
        rng: &mut R,
    ) -> Result<(Tensor, Tensor)> {
        let sa =
            |y: &Tensor, rng: &mut R| self.self_attn.forward_t(y, y, y, mask, true, train, rng);
        let (out, attn) = match self.cfg.norm {
            NormPosition::Post => {
                let (a, w) = sa(x, rng)?;
                let x = self
                    .norm1
                    .forward_add(x, &self.dropout.forward_t(&a, train, rng)?)?;
                let f = self.feed_forward(&x, train, rng)?;
                (
                    self.norm2
                        .forward_add(&x, &self.dropout.forward_t(&f, train, rng)?)?,
                    w,
                )
            }
            NormPosition::Pre => {
                let (a, w) = sa(&self.norm1.forward(x)?, rng)?;
                let x = (x + self.dropout.forward_t(&a, train, rng)?)?;
                let f = self.feed_forward(&self.norm2.forward(&x)?, train, rng)?;
                ((&x + self.dropout.forward_t(&f, train, rng)?)?, w)
            }
        };
        let attn =
            attn.ok_or_else(|| invalid("TransformerEncoderLayer", "attention weights missing"))?;
        Ok((out, attn))
    }
}
