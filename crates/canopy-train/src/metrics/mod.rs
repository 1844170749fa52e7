//! Streaming classification metrics: a confusion matrix accumulated over batches and merged
//! across workers, the scores derived from it, and the per-area building scores of the Inria
//! Aerial Image Labeling benchmark.
//!
//! Definitions follow scikit-learn (`confusion_matrix`, `accuracy_score`,
//! `cohen_kappa_score`, `precision_recall_fscore_support`, `jaccard_score` with
//! `labels=range(K)` and `zero_division=0`) and are checked against it on random cases
//! (`tools/golden/train_metrics.py`).
//!
//! # References
//! - J. Cohen. *A Coefficient of Agreement for Nominal Scales.* Educational and Psychological
//!   Measurement, 1960.
//! - E. Maggiori, Y. Tarabalka, G. Charpiat, P. Alliez. *Can Semantic Labeling Methods
//!   Generalize to Any City? The Inria Aerial Image Labeling Benchmark.* IGARSS 2017.

mod area;
mod confusion;
mod scores;

pub use area::AreaMetrics;
pub use confusion::ConfusionMatrix;
pub use scores::ClassScores;
