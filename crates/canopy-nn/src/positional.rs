//! Sinusoidal positional encodings (Vaswani et al. 2017), for positions given as indices or as
//! acquisition days of year — satellite time series are irregular, so the Transformer of
//! Rußwurm & Körner (2020) and PSE-TAE (Garnot et al. 2020) encode the date, not the index.

use candle_core::{DType, Device, Tensor};

use crate::error::invalid;
use crate::Result;

/// `PE[t, 2i] = sin(p_t / period^(2i/d))`, `PE[t, 2i+1] = cos(p_t / period^(2i/d))` for positions
/// `p_t` (time-step indices, or days of year).
///
/// `period` is 10000 in the original Transformer; 1000 suits day-of-year positions (PSE-TAE).
///
/// # Shapes
/// `positions`: `T` values -> `(T, d_model)`.
///
/// # Errors
/// When `d_model` is zero or `period` is not positive.
pub fn sinusoidal_encoding(
    positions: &[f64],
    d_model: usize,
    period: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if d_model == 0 || period.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(invalid(
            "sinusoidal_encoding",
            format!("d_model {d_model} must be positive and period {period} > 0"),
        ));
    }
    let mut v = Vec::with_capacity(positions.len() * d_model);
    for &p in positions {
        for j in 0..d_model {
            let i2 = (j - j % 2) as f64;
            let angle = p / period.powf(i2 / d_model as f64);
            v.push(if j % 2 == 0 { angle.sin() } else { angle.cos() });
        }
    }
    Ok(Tensor::from_vec(v, (positions.len(), d_model), device)?.to_dtype(dtype)?)
}

/// Day of year (1..=366) of a `(year, month, day)` date in the proleptic Gregorian calendar.
///
/// # Errors
/// For an invalid month or day.
pub fn day_of_year(year: i32, month: u32, day: u32) -> Result<u32> {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let m = month as usize;
    if !(1..=12).contains(&m) || day == 0 || day > days[m - 1] {
        return Err(invalid(
            "day_of_year",
            format!("{year}-{month:02}-{day:02} is not a date"),
        ));
    }
    Ok(days[..m - 1].iter().sum::<u32>() + day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_values_and_dates() {
        let pe =
            sinusoidal_encoding(&[0.0, 1.0, 100.0], 4, 10000.0, DType::F64, &Device::Cpu).unwrap();
        let v: Vec<Vec<f64>> = pe.to_vec2().unwrap();
        assert_eq!(v[0], vec![0.0, 1.0, 0.0, 1.0]);
        assert!((v[1][0] - 1f64.sin()).abs() < 1e-15);
        assert!((v[2][2] - (100.0f64 / 100.0).sin()).abs() < 1e-15); // 10000^(2/4) = 100
        assert!((v[2][3] - 1f64.cos()).abs() < 1e-15);
        assert_eq!(day_of_year(2024, 3, 1).unwrap(), 61);
        assert_eq!(day_of_year(2023, 12, 31).unwrap(), 365);
        assert!(day_of_year(2023, 2, 29).is_err());
        assert!(sinusoidal_encoding(&[1.0], 0, 1.0, DType::F32, &Device::Cpu).is_err());
    }
}
