//! The GeoTIFF GeoKey directory (OGC GeoTIFF 1.1, section 7), kept whole so that a file written
//! here carries every key that was read, including user-defined coordinate systems.

use crate::{Error, Result};

/// `GTModelTypeGeoKey`: 1 projected, 2 geographic, 3 geocentric.
pub const GT_MODEL_TYPE: u16 = 1024;
/// `GTRasterTypeGeoKey`: 1 PixelIsArea, 2 PixelIsPoint.
pub const GT_RASTER_TYPE: u16 = 1025;
/// `GTCitationGeoKey` (ASCII).
pub const GT_CITATION: u16 = 1026;
/// `GeographicTypeGeoKey` (EPSG code of a geographic CRS, 32767 = user-defined).
pub const GEOGRAPHIC_TYPE: u16 = 2048;
/// `ProjectedCSTypeGeoKey` (EPSG code of a projected CRS, 32767 = user-defined).
pub const PROJECTED_CS_TYPE: u16 = 3072;
/// `ProjLinearUnitsGeoKey`.
pub const PROJ_LINEAR_UNITS: u16 = 3076;
/// The GeoTIFF code for "user-defined".
pub const USER_DEFINED: u16 = 32767;

/// TIFF tag holding the key directory.
pub(crate) const TAG_GEO_KEY_DIRECTORY: u16 = 34735;
/// TIFF tag holding double-valued keys.
pub(crate) const TAG_GEO_DOUBLE_PARAMS: u16 = 34736;
/// TIFF tag holding ASCII-valued keys.
pub(crate) const TAG_GEO_ASCII_PARAMS: u16 = 34737;

/// The value of one GeoKey.
#[derive(Debug, Clone, PartialEq)]
pub enum GeoKeyValue {
    /// One or more SHORT values stored in the directory itself (or in its tag).
    Short(Vec<u16>),
    /// Values from `GeoDoubleParamsTag`.
    Double(Vec<f64>),
    /// A string from `GeoAsciiParamsTag` (without the trailing `|`).
    Ascii(String),
}

/// One GeoKey: its id and value.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoKey {
    /// The key id (for example [`PROJECTED_CS_TYPE`]).
    pub id: u16,
    /// Its value.
    pub value: GeoKeyValue,
}

/// A parsed GeoKey directory: every key, in id order, with its value resolved.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GeoKeyDirectory {
    /// Directory version triple (`KeyDirectoryVersion`, `KeyRevision`, `MinorRevision`).
    pub version: [u16; 3],
    /// The keys, sorted by id.
    pub keys: Vec<GeoKey>,
}

/// The three TIFF tags a [`GeoKeyDirectory`] serialises to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GeoKeyTags {
    /// `GeoKeyDirectoryTag` (34735).
    pub directory: Vec<u16>,
    /// `GeoDoubleParamsTag` (34736), empty when unused.
    pub doubles: Vec<f64>,
    /// `GeoAsciiParamsTag` (34737), empty when unused.
    pub ascii: String,
}

impl GeoKeyDirectory {
    /// Parses the directory from the three GeoTIFF tags. Errors name the inconsistency.
    pub fn parse(directory: &[u16], doubles: &[f64], ascii: &str) -> Result<Self> {
        let bad = |m: String| Error::InvalidArgument(format!("GeoKey directory: {m}"));
        if directory.len() < 4 {
            return Err(bad(format!(
                "header needs 4 values, the tag has {}",
                directory.len()
            )));
        }
        let n = directory[3] as usize;
        if directory.len() < 4 + 4 * n {
            return Err(bad(format!(
                "header announces {n} keys but the tag holds only {} values",
                directory.len()
            )));
        }
        let ascii_bytes = ascii.as_bytes();
        let mut keys = Vec::with_capacity(n);
        for e in directory[4..4 + 4 * n].chunks_exact(4) {
            let (id, loc, count, off) = (e[0], e[1], e[2] as usize, e[3] as usize);
            let value = match loc {
                0 => GeoKeyValue::Short(vec![e[3]]),
                TAG_GEO_KEY_DIRECTORY => {
                    let v = directory.get(off..off + count).ok_or_else(|| {
                        bad(format!(
                            "key {id}: SHORT values {off}..{} out of range",
                            off + count
                        ))
                    })?;
                    GeoKeyValue::Short(v.to_vec())
                }
                TAG_GEO_DOUBLE_PARAMS => {
                    let v = doubles.get(off..off + count).ok_or_else(|| {
                        bad(format!(
                            "key {id}: doubles {off}..{} out of range ({} present)",
                            off + count,
                            doubles.len()
                        ))
                    })?;
                    GeoKeyValue::Double(v.to_vec())
                }
                TAG_GEO_ASCII_PARAMS => {
                    let end = (off + count).min(ascii_bytes.len());
                    let raw = ascii_bytes.get(off..end).ok_or_else(|| {
                        bad(format!(
                            "key {id}: ASCII offset {off} beyond {} bytes",
                            ascii_bytes.len()
                        ))
                    })?;
                    let s = String::from_utf8_lossy(raw);
                    let s = s.trim_end_matches(['|', '\0']).to_string();
                    GeoKeyValue::Ascii(s)
                }
                other => return Err(bad(format!("key {id}: unknown value location tag {other}"))),
            };
            keys.push(GeoKey { id, value });
        }
        keys.sort_by_key(|k| k.id);
        Ok(GeoKeyDirectory {
            version: [directory[0], directory[1], directory[2]],
            keys,
        })
    }

    /// A directory for an EPSG code; geographic when `geographic`, projected otherwise.
    pub fn from_epsg(epsg: u16, geographic: bool) -> Self {
        let mut d = GeoKeyDirectory {
            version: [1, 1, 0],
            keys: Vec::new(),
        };
        if geographic {
            d.set_short(GT_MODEL_TYPE, 2);
            d.set_short(GEOGRAPHIC_TYPE, epsg);
        } else {
            d.set_short(GT_MODEL_TYPE, 1);
            d.set_short(PROJECTED_CS_TYPE, epsg);
        }
        d
    }

    /// The key with this id.
    pub fn key(&self, id: u16) -> Option<&GeoKeyValue> {
        self.keys.iter().find(|k| k.id == id).map(|k| &k.value)
    }

    /// The first SHORT value of a key.
    pub fn short(&self, id: u16) -> Option<u16> {
        match self.key(id)? {
            GeoKeyValue::Short(v) => v.first().copied(),
            _ => None,
        }
    }

    /// Sets (or adds) a single-SHORT key, keeping the keys sorted.
    pub fn set_short(&mut self, id: u16, value: u16) {
        let v = GeoKeyValue::Short(vec![value]);
        match self.keys.iter_mut().find(|k| k.id == id) {
            Some(k) => k.value = v,
            None => {
                self.keys.push(GeoKey { id, value: v });
                self.keys.sort_by_key(|k| k.id);
            }
        }
    }

    /// The EPSG code of the CRS: `ProjectedCSTypeGeoKey`, else `GeographicTypeGeoKey`;
    /// `None` when absent or user-defined.
    pub fn epsg(&self) -> Option<u32> {
        [PROJECTED_CS_TYPE, GEOGRAPHIC_TYPE]
            .into_iter()
            .filter_map(|id| self.short(id))
            .find(|&c| c != 0 && c != USER_DEFINED)
            .map(u32::from)
    }

    /// Serialises to the three TIFF tags.
    pub fn to_tags(&self) -> GeoKeyTags {
        let mut t = GeoKeyTags::default();
        let n = self.keys.len();
        t.directory.extend_from_slice(&[
            self.version[0],
            self.version[1],
            self.version[2],
            n as u16,
        ]);
        let mut extra_shorts: Vec<u16> = Vec::new();
        let mut entries = Vec::with_capacity(n * 4);
        let base = 4 + 4 * n;
        for k in &self.keys {
            match &k.value {
                GeoKeyValue::Short(v) if v.len() == 1 => {
                    entries.extend_from_slice(&[k.id, 0, 1, v[0]]);
                }
                GeoKeyValue::Short(v) => {
                    let off = base + extra_shorts.len();
                    entries.extend_from_slice(&[
                        k.id,
                        TAG_GEO_KEY_DIRECTORY,
                        v.len() as u16,
                        off as u16,
                    ]);
                    extra_shorts.extend_from_slice(v);
                }
                GeoKeyValue::Double(v) => {
                    entries.extend_from_slice(&[
                        k.id,
                        TAG_GEO_DOUBLE_PARAMS,
                        v.len() as u16,
                        t.doubles.len() as u16,
                    ]);
                    t.doubles.extend_from_slice(v);
                }
                GeoKeyValue::Ascii(s) => {
                    let off = t.ascii.len();
                    t.ascii.push_str(s);
                    t.ascii.push('|');
                    entries.extend_from_slice(&[
                        k.id,
                        TAG_GEO_ASCII_PARAMS,
                        (s.len() + 1) as u16,
                        off as u16,
                    ]);
                }
            }
        }
        t.directory.extend_from_slice(&entries);
        t.directory.extend_from_slice(&extra_shorts);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_serialise_round_trip_with_all_value_kinds() {
        let mut d = GeoKeyDirectory::from_epsg(32618, false);
        d.keys.push(GeoKey {
            id: GT_CITATION,
            value: GeoKeyValue::Ascii("WGS 84 / UTM zone 18N".into()),
        });
        d.keys.push(GeoKey {
            id: 3080,
            value: GeoKeyValue::Double(vec![-75.0]),
        });
        d.keys.sort_by_key(|k| k.id);
        let t = d.to_tags();
        let back = GeoKeyDirectory::parse(&t.directory, &t.doubles, &t.ascii).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.epsg(), Some(32618));
    }

    #[test]
    fn user_defined_has_no_epsg_and_truncated_directory_is_an_error() {
        let d = GeoKeyDirectory::from_epsg(USER_DEFINED, false);
        assert_eq!(d.epsg(), None);
        assert!(GeoKeyDirectory::parse(&[1, 1, 0, 3, 1024, 0, 1, 1], &[], "").is_err());
        assert!(GeoKeyDirectory::parse(
            &[1, 1, 0, 1, 3080, TAG_GEO_DOUBLE_PARAMS, 1, 5],
            &[1.0],
            ""
        )
        .is_err());
    }
}
