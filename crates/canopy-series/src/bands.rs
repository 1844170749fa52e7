//! Named Sentinel-2 MSI bands and the band orders of published datasets.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A Sentinel-2 MSI spectral band (Level-1C has all 13; Level-2A drops B10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Band {
    /// Coastal aerosol, 443 nm, 60 m.
    B01,
    /// Blue, 490 nm, 10 m.
    B02,
    /// Green, 560 nm, 10 m.
    B03,
    /// Red, 665 nm, 10 m.
    B04,
    /// Red edge 1, 705 nm, 20 m.
    B05,
    /// Red edge 2, 740 nm, 20 m.
    B06,
    /// Red edge 3, 783 nm, 20 m.
    B07,
    /// Near infrared, 842 nm, 10 m.
    B08,
    /// Narrow near infrared, 865 nm, 20 m.
    B8A,
    /// Water vapour, 945 nm, 60 m.
    B09,
    /// SWIR cirrus, 1375 nm, 60 m (Level-1C only).
    B10,
    /// SWIR 1, 1610 nm, 20 m.
    B11,
    /// SWIR 2, 2190 nm, 20 m.
    B12,
}

impl Band {
    /// All 13 bands in wavelength order (B8A after B08).
    pub const ALL: [Band; 13] = [
        Band::B01,
        Band::B02,
        Band::B03,
        Band::B04,
        Band::B05,
        Band::B06,
        Band::B07,
        Band::B08,
        Band::B8A,
        Band::B09,
        Band::B10,
        Band::B11,
        Band::B12,
    ];

    /// The zero-padded name, `"B01"`, ..., `"B8A"`, ..., `"B12"` (ESA product naming).
    pub fn name(self) -> &'static str {
        match self {
            Band::B01 => "B01",
            Band::B02 => "B02",
            Band::B03 => "B03",
            Band::B04 => "B04",
            Band::B05 => "B05",
            Band::B06 => "B06",
            Band::B07 => "B07",
            Band::B08 => "B08",
            Band::B8A => "B8A",
            Band::B09 => "B09",
            Band::B10 => "B10",
            Band::B11 => "B11",
            Band::B12 => "B12",
        }
    }

    /// The short name used by Google Earth Engine and BreizhCrops' CSV columns:
    /// `"B1"`, ..., `"B8A"`, ..., `"B12"`.
    pub fn short_name(self) -> &'static str {
        match self {
            Band::B01 => "B1",
            Band::B02 => "B2",
            Band::B03 => "B3",
            Band::B04 => "B4",
            Band::B05 => "B5",
            Band::B06 => "B6",
            Band::B07 => "B7",
            Band::B08 => "B8",
            Band::B09 => "B9",
            other => other.name(),
        }
    }

    /// Parses `"B01"`, `"B1"`, `"b8a"`, ... (case-insensitive, leading zero optional).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] quoting the name when it is no Sentinel-2 band.
    pub fn parse(name: &str) -> Result<Band> {
        let up = name.trim().to_ascii_uppercase();
        Band::ALL
            .into_iter()
            .find(|b| b.name() == up || b.short_name() == up)
            .ok_or_else(|| Error::InvalidArgument {
                op: "Band::parse",
                message: format!(
                    "{name:?} is not a Sentinel-2 band; use B01..B12 or B8A (or B1..B12)"
                ),
            })
    }

    /// Centre wavelength in nanometres (Sentinel-2A).
    pub fn wavelength_nm(self) -> u16 {
        match self {
            Band::B01 => 443,
            Band::B02 => 490,
            Band::B03 => 560,
            Band::B04 => 665,
            Band::B05 => 705,
            Band::B06 => 740,
            Band::B07 => 783,
            Band::B08 => 842,
            Band::B8A => 865,
            Band::B09 => 945,
            Band::B10 => 1375,
            Band::B11 => 1610,
            Band::B12 => 2190,
        }
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The Level-1C band order of BreizhCrops (Rußwurm et al. 2020): the alphabetical order of the
/// Earth Engine column names `B1, B10, B11, B12, B2, ..., B8, B8A, B9`.
///
/// **Pretrained BreizhCrops weights depend on this order**: their first layer expects the
/// 13 reflectances (scaled by `1e-4`) in exactly these positions. Reorder inputs with
/// [`crate::SeriesDataset::select_bands`] before feeding such a model.
pub const BREIZHCROPS_L1C_BANDS: [Band; 13] = [
    Band::B01,
    Band::B10,
    Band::B11,
    Band::B12,
    Band::B02,
    Band::B03,
    Band::B04,
    Band::B05,
    Band::B06,
    Band::B07,
    Band::B08,
    Band::B8A,
    Band::B09,
];

/// Position of `band` in `names` (band names as strings, any Sentinel-2 spelling accepted).
///
/// # Errors
/// [`Error::InvalidArgument`] listing the available names when the band is missing.
pub fn band_index(names: &[String], band: Band) -> Result<usize> {
    names
        .iter()
        .position(|n| Band::parse(n).ok() == Some(band))
        .ok_or_else(|| Error::InvalidArgument {
            op: "band_index",
            message: format!("band {band} is not among the series' bands {names:?}"),
        })
}

/// Names of `bands` as owned strings (zero-padded form).
pub fn band_names(bands: &[Band]) -> Vec<String> {
    bands.iter().map(|b| b.name().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() -> Result<()> {
        for b in Band::ALL {
            assert_eq!(Band::parse(b.name())?, b);
            assert_eq!(Band::parse(b.short_name())?, b);
        }
        assert_eq!(Band::B02.short_name(), "B2");
        assert_eq!(Band::B8A.short_name(), "B8A");
        assert_eq!(Band::B10.short_name(), "B10");
        assert!(Band::parse("B13").is_err());
        let mut sorted: Vec<&str> = Band::ALL.iter().map(|b| b.short_name()).collect();
        sorted.sort_unstable();
        let bz: Vec<&str> = BREIZHCROPS_L1C_BANDS
            .iter()
            .map(|b| b.short_name())
            .collect();
        assert_eq!(sorted, bz, "BreizhCrops order is the sorted short names");
        Ok(())
    }
}
