//! Progress display of the training loop: an indicatif bar with the running loss, a metric and
//! the throughput when stdout is a terminal, plain lines otherwise (logs, CI), nothing in quiet
//! mode (tests).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ProgressMode {
    /// A bar when stdout is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Always a bar.
    Bar,
    /// Plain lines: at most about ten per phase (at least 2 s apart) plus a summary.
    Plain,
    /// Nothing.
    Quiet,
}

/// Progress of one phase (an epoch's training or validation pass) at a time.
#[derive(Debug)]
pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    label: String,
    len: Option<usize>,
    pos: usize,
    samples: usize,
    start: Instant,
    last_line: Instant,
}

impl Progress {
    /// A display in `mode` (`Auto` is resolved here by looking at stdout).
    pub fn new(mode: ProgressMode) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stdout().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        Progress {
            mode,
            bar: None,
            label: String::new(),
            len: None,
            pos: 0,
            samples: 0,
            start: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// The resolved mode (never `Auto`).
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// Starts a phase named `label` with `len` steps, when known.
    pub fn start(&mut self, label: impl Into<String>, len: Option<usize>) {
        self.finish_bar();
        self.label = label.into();
        self.len = len;
        self.pos = 0;
        self.samples = 0;
        self.start = Instant::now();
        self.last_line = self.start;
        if self.mode == ProgressMode::Bar {
            let bar =
                ProgressBar::with_draw_target(len.map(|n| n as u64), ProgressDrawTarget::stdout());
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:28.cyan/blue}] {pos}/{len} {elapsed}<{eta} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(self.label.clone());
            self.bar = Some(bar);
        }
    }

    /// Samples per second since the phase started.
    pub fn samples_per_second(&self) -> f64 {
        let s = self.start.elapsed().as_secs_f64();
        if s > 0.0 {
            self.samples as f64 / s
        } else {
            0.0
        }
    }

    /// Records one step of `batch_size` samples; `loss` is the running mean loss and `metric` an
    /// optional running metric to show.
    pub fn step(&mut self, batch_size: usize, loss: f64, metric: Option<(&str, f64)>) {
        self.pos += 1;
        self.samples += batch_size;
        let msg = self.message(loss, metric);
        match self.mode {
            ProgressMode::Bar => {
                if let Some(b) = &self.bar {
                    b.set_message(msg);
                    b.inc(1);
                }
            }
            ProgressMode::Plain => {
                let every = self.len.map(|n| n.div_ceil(10)).unwrap_or(50).max(1);
                // At most about ten lines per phase, and none more often than every 2 s.
                let due = self.last_line.elapsed().as_secs_f64() >= 2.0;
                if due && self.pos % every == 0 && Some(self.pos) != self.len {
                    self.last_line = Instant::now();
                    let of = self.len.map(|n| format!("/{n}")).unwrap_or_default();
                    println!("{} {}{of} {msg}", self.label, self.pos);
                }
            }
            _ => {}
        }
    }

    fn message(&self, loss: f64, metric: Option<(&str, f64)>) -> String {
        let m = metric
            .map(|(k, v)| format!(" {k} {v:.4}"))
            .unwrap_or_default();
        format!(
            "loss {loss:.4}{m} {:.0} samples/s",
            self.samples_per_second()
        )
    }

    /// Ends the phase, printing `summary` (except in quiet mode).
    pub fn finish(&mut self, summary: &str) {
        self.finish_bar();
        if self.mode != ProgressMode::Quiet {
            println!("{} {summary}", self.label);
        }
    }

    fn finish_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish_bar();
    }
}
