//! Learning-rate schedules as closed-form functions of the step: `lr(t)` for `t = 0, 1, ...`
//! is the learning rate in force during step (or epoch) `t`. Being stateless, a schedule resumes
//! by itself from the step count a checkpoint stores.
//!
//! Values equal PyTorch's `torch.optim.lr_scheduler` (read from `param_groups[0]["lr"]` before
//! step `t` when the scheduler's `step()` is called once per step), checked by the golden test
//! `tests/schedule.rs`:
//!
//! | here | PyTorch |
//! |---|---|
//! | [`StepLr`] | `StepLR` |
//! | [`MultiStepLr`] | `MultiStepLR` |
//! | [`ExponentialLr`] (per iteration, as in Maggiori et al.'s recipes) | `ExponentialLR` |
//! | [`CosineAnnealingLr`] | `CosineAnnealingLR` (its closed form) |
//! | [`CyclicLr`] (Smith 2017: triangular, triangular2, exp_range) | `CyclicLR(cycle_momentum=False)` |
//! | [`OneCycleLr`] (Smith & Topin 2019) | `OneCycleLR(cycle_momentum=False)` |
//! | [`LinearLr`] (linear warm-up) | `LinearLR` |
//! | [`NoamLr`] (Vaswani et al. 2017, inverse-square-root warm-up) | `LambdaLR` with the same formula |
//! | [`Sequential`] (e.g. warm-up then cosine) | `SequentialLR` |
//!
//! Closures `Fn(usize) -> f64` are schedules too.
//!
//! # References
//! - PyTorch documentation of `torch.optim.lr_scheduler` (2.x).
//! - L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017.
//! - L. N. Smith & N. Topin, "Super-Convergence: Very Fast Training of Neural Networks Using
//!   Large Learning Rates", 2019.
//! - A. Vaswani et al., "Attention Is All You Need", NeurIPS 2017, section 5.3.

use std::f64::consts::PI;

use crate::error::invalid;
use crate::Result;

/// A learning rate as a function of the step count.
pub trait LrSchedule: Send + Sync {
    /// The learning rate in force during step `t` (0-based).
    fn lr(&self, t: usize) -> f64;
}

impl<F: Fn(usize) -> f64 + Send + Sync> LrSchedule for F {
    fn lr(&self, t: usize) -> f64 {
        self(t)
    }
}

/// A constant learning rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConstantLr(pub f64);

impl LrSchedule for ConstantLr {
    fn lr(&self, _t: usize) -> f64 {
        self.0
    }
}

/// `base * gamma^floor(t / step_size)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLr {
    /// Starting learning rate.
    pub base: f64,
    /// Steps between decays (> 0).
    pub step_size: usize,
    /// Decay factor.
    pub gamma: f64,
}

impl LrSchedule for StepLr {
    fn lr(&self, t: usize) -> f64 {
        self.base * self.gamma.powi(pow_count(t / self.step_size.max(1)))
    }
}

/// `base * gamma^(number of milestones <= t)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStepLr {
    /// Starting learning rate.
    pub base: f64,
    /// Steps at which the rate is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    /// Decay factor.
    pub gamma: f64,
}

impl LrSchedule for MultiStepLr {
    fn lr(&self, t: usize) -> f64 {
        let k = self.milestones.iter().filter(|&&m| m <= t).count();
        self.base * self.gamma.powi(pow_count(k))
    }
}

/// `base * gamma^t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialLr {
    /// Starting learning rate.
    pub base: f64,
    /// Decay factor per step.
    pub gamma: f64,
}

impl LrSchedule for ExponentialLr {
    fn lr(&self, t: usize) -> f64 {
        self.base * self.gamma.powi(pow_count(t))
    }
}

/// `eta_min + (base - eta_min) (1 + cos(pi t / t_max)) / 2` (periodic past `t_max`, like
/// PyTorch's closed form).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineAnnealingLr {
    /// Starting (maximum) learning rate.
    pub base: f64,
    /// Half period in steps (> 0).
    pub t_max: usize,
    /// Minimum learning rate.
    pub eta_min: f64,
}

impl LrSchedule for CosineAnnealingLr {
    fn lr(&self, t: usize) -> f64 {
        let x = t as f64 / self.t_max.max(1) as f64;
        self.eta_min + (self.base - self.eta_min) * (1.0 + (PI * x).cos()) / 2.0
    }
}

/// The amplitude policy of [`CyclicLr`] (Smith 2017).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CyclicMode {
    /// Constant amplitude.
    Triangular,
    /// Amplitude halved every cycle.
    Triangular2,
    /// Amplitude scaled by `gamma^t` (t = step).
    ExpRange {
        /// Decay per step.
        gamma: f64,
    },
}

/// Cyclical learning rate between `base_lr` and `max_lr`: `step_size_up` steps up, then
/// `step_size_down` steps down, with the amplitude policy `mode`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CyclicLr {
    /// Lower bound.
    pub base_lr: f64,
    /// Upper bound (of the first cycle).
    pub max_lr: f64,
    /// Steps in the increasing half.
    pub step_size_up: usize,
    /// Steps in the decreasing half (PyTorch's default: equal to `step_size_up`).
    pub step_size_down: usize,
    /// Amplitude policy.
    pub mode: CyclicMode,
}

impl CyclicLr {
    /// A symmetric triangular cycle with `step_size` steps each way.
    pub fn triangular(base_lr: f64, max_lr: f64, step_size: usize) -> Self {
        CyclicLr {
            base_lr,
            max_lr,
            step_size_up: step_size,
            step_size_down: step_size,
            mode: CyclicMode::Triangular,
        }
    }
}

impl LrSchedule for CyclicLr {
    fn lr(&self, t: usize) -> f64 {
        let total = (self.step_size_up + self.step_size_down).max(1) as f64;
        let ratio = self.step_size_up as f64 / total;
        let tf = t as f64;
        let cycle = (1.0 + tf / total).floor();
        let x = 1.0 + tf / total - cycle;
        let scale = if x <= ratio {
            x / ratio
        } else {
            (x - 1.0) / (ratio - 1.0)
        };
        let height = (self.max_lr - self.base_lr) * scale;
        let amp = match self.mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2f64.powf(cycle - 1.0),
            CyclicMode::ExpRange { gamma } => gamma.powf(tf),
        };
        self.base_lr + height * amp
    }
}

/// How [`OneCycleLr`] moves between its phase end points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anneal {
    /// Half a cosine (PyTorch's default).
    Cosine,
    /// A straight line.
    Linear,
}

/// The one-cycle policy (Smith & Topin): from `max_lr / div_factor` up to `max_lr` during the
/// first `pct_start` of `total_steps`, then down to `max_lr / div_factor / final_div_factor`
/// (with `three_phase`, down to the start value first, then to the minimum).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycleLr {
    /// Peak learning rate.
    pub max_lr: f64,
    /// Length of the cycle; later steps keep the final value.
    pub total_steps: usize,
    /// Fraction of the cycle spent increasing.
    pub pct_start: f64,
    /// Interpolation between phase end points.
    pub anneal: Anneal,
    /// Starting value = `max_lr / div_factor`.
    pub div_factor: f64,
    /// Final value = starting value / `final_div_factor`.
    pub final_div_factor: f64,
    /// Use the three-phase variant.
    pub three_phase: bool,
}

impl OneCycleLr {
    /// PyTorch's defaults: pct_start 0.3, cosine, div_factor 25, final_div_factor 1e4.
    pub fn new(max_lr: f64, total_steps: usize) -> Self {
        OneCycleLr {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal: Anneal::Cosine,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }

    /// Checks the phase lengths the way PyTorch does.
    ///
    /// # Errors
    /// When `total_steps` is 0 or `pct_start` is outside `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if self.total_steps == 0 || !(0.0..=1.0).contains(&self.pct_start) {
            return Err(invalid(
                "OneCycleLr",
                format!(
                    "needs total_steps > 0 and pct_start in [0, 1], got {} and {}",
                    self.total_steps, self.pct_start
                ),
            ));
        }
        Ok(())
    }
}

impl LrSchedule for OneCycleLr {
    fn lr(&self, t: usize) -> f64 {
        let initial = self.max_lr / self.div_factor;
        let min = initial / self.final_div_factor;
        let total = self.total_steps as f64;
        let up_end = self.pct_start * total - 1.0;
        let phases: Vec<(f64, f64, f64)> = if self.three_phase {
            vec![
                (up_end, initial, self.max_lr),
                (2.0 * self.pct_start * total - 2.0, self.max_lr, initial),
                (total - 1.0, initial, min),
            ]
        } else {
            vec![
                (up_end, initial, self.max_lr),
                (total - 1.0, self.max_lr, min),
            ]
        };
        let step = (t.min(self.total_steps.saturating_sub(1))) as f64;
        let mut start_step = 0.0;
        let last = phases.len() - 1;
        for (i, &(end_step, from, to)) in phases.iter().enumerate() {
            if step <= end_step || i == last {
                let pct = (step - start_step) / (end_step - start_step);
                return match self.anneal {
                    Anneal::Cosine => to + (from - to) / 2.0 * ((PI * pct).cos() + 1.0),
                    Anneal::Linear => (to - from) * pct + from,
                };
            }
            start_step = end_step;
        }
        min
    }
}

/// Linear change of the factor from `start_factor` to `end_factor` over `total_iters` steps,
/// times `base` (a linear warm-up when `start_factor < end_factor = 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearLr {
    /// Target learning rate.
    pub base: f64,
    /// Factor at step 0.
    pub start_factor: f64,
    /// Factor from step `total_iters` on.
    pub end_factor: f64,
    /// Length of the ramp.
    pub total_iters: usize,
}

impl LinearLr {
    /// A warm-up from `base * start_factor` to `base` over `total_iters` steps.
    pub fn warmup(base: f64, start_factor: f64, total_iters: usize) -> Self {
        LinearLr {
            base,
            start_factor,
            end_factor: 1.0,
            total_iters,
        }
    }
}

impl LrSchedule for LinearLr {
    fn lr(&self, t: usize) -> f64 {
        let n = self.total_iters.max(1) as f64;
        let k = t.min(self.total_iters) as f64;
        self.base * (self.start_factor + (self.end_factor - self.start_factor) * k / n)
    }
}

/// The Transformer schedule (Vaswani et al. 2017):
/// `scale * d_model^-0.5 * min(s^-0.5, s * warmup^-1.5)` with `s = t + 1`: linear warm-up for
/// `warmup` steps, then decay with the inverse square root of the step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoamLr {
    /// Model width.
    pub d_model: usize,
    /// Warm-up steps (> 0).
    pub warmup: usize,
    /// Overall factor (1 in the paper).
    pub scale: f64,
}

impl LrSchedule for NoamLr {
    fn lr(&self, t: usize) -> f64 {
        let s = (t + 1) as f64;
        let w = self.warmup.max(1) as f64;
        self.scale * (self.d_model.max(1) as f64).powf(-0.5) * s.powf(-0.5).min(s * w.powf(-1.5))
    }
}

/// Schedules one after the other: `schedules[0]` until `milestones[0]`, then `schedules[1]`
/// counted from 0 again, and so on (PyTorch's `SequentialLR`).
pub struct Sequential {
    schedules: Vec<Box<dyn LrSchedule>>,
    milestones: Vec<usize>,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequential")
            .field("schedules", &self.schedules.len())
            .field("milestones", &self.milestones)
            .finish()
    }
}

impl Sequential {
    /// Chains `schedules` switching at `milestones` (one fewer than schedules, increasing).
    ///
    /// # Errors
    /// When the counts do not fit or the milestones do not increase.
    pub fn new(schedules: Vec<Box<dyn LrSchedule>>, milestones: Vec<usize>) -> Result<Self> {
        if schedules.is_empty() || milestones.len() + 1 != schedules.len() {
            return Err(invalid(
                "Sequential",
                format!(
                    "needs one milestone fewer than schedules, got {} schedules and {} milestones",
                    schedules.len(),
                    milestones.len()
                ),
            ));
        }
        if milestones.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(
                "Sequential",
                format!("milestones must increase, got {milestones:?}"),
            ));
        }
        Ok(Sequential {
            schedules,
            milestones,
        })
    }

    /// `warmup` for `steps` steps, then `then` counted from 0.
    pub fn warmup_then(
        warmup: impl LrSchedule + 'static,
        steps: usize,
        then: impl LrSchedule + 'static,
    ) -> Self {
        Sequential {
            schedules: vec![Box::new(warmup), Box::new(then)],
            milestones: vec![steps],
        }
    }
}

impl LrSchedule for Sequential {
    fn lr(&self, t: usize) -> f64 {
        let i = self.milestones.iter().filter(|&&m| m <= t).count();
        let start = if i == 0 {
            0
        } else {
            self.milestones.get(i - 1).copied().unwrap_or(0)
        };
        self.schedules
            .get(i)
            .map(|s| s.lr(t - start))
            .unwrap_or(f64::NAN)
    }
}

fn pow_count(k: usize) -> i32 {
    i32::try_from(k).unwrap_or(i32::MAX)
}
