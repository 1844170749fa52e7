//! Calendar dates of acquisitions: [`Date`] with day-of-year and days-since-epoch conversions.
//!
//! Dates are proleptic Gregorian, without time zone: satellite acquisition times are UTC and
//! only the day matters for time-series work. Days are counted from 1970-01-01 (day 0), the
//! Unix epoch, so differences of [`Date::days_since_epoch`] are day intervals.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A calendar day (proleptic Gregorian), ordered chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl Date {
    /// The date `year-month-day`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the month is not 1..=12 or the day does not exist in that
    /// month (February 29 only in leap years).
    pub fn new(year: i32, month: u8, day: u8) -> Result<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(Error::InvalidArgument {
                op: "Date::new",
                message: format!("{year:04}-{month:02}-{day:02} is not a calendar date"),
            });
        }
        Ok(Date { year, month, day })
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month, 1..=12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The day of the month, 1..=31.
    pub fn day(self) -> u8 {
        self.day
    }

    /// Day of the year, 1 (January 1) ..= 365 or 366.
    pub fn day_of_year(self) -> u16 {
        let before: u16 = (1..self.month)
            .map(|m| u16::from(days_in_month(self.year, m)))
            .sum();
        before + u16::from(self.day)
    }

    /// Days since 1970-01-01 (negative before it).
    pub fn days_since_epoch(self) -> i64 {
        // Howard Hinnant's `days_from_civil`: years start in March so the leap day is last.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01 (inverse of [`Date::days_since_epoch`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the year would not fit in an `i32`.
    pub fn from_days_since_epoch(days: i64) -> Result<Date> {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let year = i32::try_from(year).map_err(|_| Error::InvalidArgument {
            op: "Date::from_days_since_epoch",
            message: format!("{days} days from 1970-01-01 is outside the representable years"),
        })?;
        // month in 1..=12 and day in 1..=31 by construction.
        Date::new(year, month as u8, day as u8)
    }

    /// The date `n` days later (earlier for negative `n`).
    ///
    /// # Errors
    /// As [`Date::from_days_since_epoch`].
    pub fn add_days(self, n: i64) -> Result<Date> {
        Date::from_days_since_epoch(self.days_since_epoch() + n)
    }

    /// Parses `YYYY-MM-DD`, optionally followed by a time part starting with `T` or a space
    /// (`YYYY-MM-DDTHH:MM:SS[.fff][Z|+hh:mm]`), which is ignored after a syntax check of its
    /// first eight characters.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] quoting the text when it is not such a date.
    pub fn parse(text: &str) -> Result<Date> {
        let t = text.trim();
        let bad = |why: &str| Error::InvalidArgument {
            op: "Date::parse",
            message: format!("{t:?} is not an ISO date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS): {why}"),
        };
        let (day_part, time_part) = match t.find(['T', ' ']) {
            Some(i) => (&t[..i], Some(&t[i + 1..])),
            None => (t, None),
        };
        let mut it = day_part.split('-');
        let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad("expected three '-'-separated numbers"));
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad("expected 4-digit year, 2-digit month and day"));
        }
        let num = |s: &str| -> Result<u32> {
            if s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<u32>().map_err(|_| bad("not a number"))
            } else {
                Err(bad("not a number"))
            }
        };
        let (y, m, d) = (num(y)?, num(m)?, num(d)?);
        if let Some(time) = time_part {
            let hms = time
                .get(..8)
                .ok_or_else(|| bad("time part shorter than HH:MM:SS"))?;
            let b = hms.as_bytes();
            let ok = b.iter().enumerate().all(|(i, c)| {
                if i == 2 || i == 5 {
                    *c == b':'
                } else {
                    c.is_ascii_digit()
                }
            });
            if !ok {
                return Err(bad("time part is not HH:MM:SS"));
            }
        }
        Date::new(y as i32, m as u8, d as u8).map_err(|_| bad("no such day"))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl FromStr for Date {
    type Err = Error;

    fn from_str(s: &str) -> Result<Date> {
        Date::parse(s)
    }
}

impl TryFrom<String> for Date {
    type Error = Error;

    fn try_from(s: String) -> Result<Date> {
        Date::parse(&s)
    }
}

impl From<Date> for String {
    fn from(d: Date) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_days() -> Result<()> {
        assert_eq!(Date::new(1970, 1, 1)?.days_since_epoch(), 0);
        assert_eq!(Date::new(2000, 3, 1)?.days_since_epoch(), 11_017);
        assert_eq!(Date::new(1969, 12, 31)?.days_since_epoch(), -1);
        assert_eq!(Date::new(2016, 12, 31)?.day_of_year(), 366);
        assert_eq!(Date::new(2015, 12, 31)?.day_of_year(), 365);
        assert_eq!(Date::new(2015, 3, 1)?.day_of_year(), 60);
        Ok(())
    }

    #[test]
    fn round_trip_over_many_days() -> Result<()> {
        let mut prev = Date::from_days_since_epoch(-800_000)?;
        for n in -799_999..800_000i64 {
            let d = Date::from_days_since_epoch(n)?;
            assert_eq!(d.days_since_epoch(), n);
            assert!(d > prev, "{d} after {prev}");
            prev = d;
        }
        Ok(())
    }

    #[test]
    fn parses_iso_forms_and_rejects_others() -> Result<()> {
        assert_eq!(Date::parse("2015-07-11T10:00:08")?, Date::new(2015, 7, 11)?);
        assert_eq!(Date::parse("2018-01-05")?, Date::new(2018, 1, 5)?);
        assert_eq!(
            Date::parse("2018-01-05 00:00:00+00:00")?,
            Date::new(2018, 1, 5)?
        );
        for bad in [
            "2018-02-30",
            "2018-1-05",
            "18-01-05",
            "2018-01-05T1:00",
            "x",
            "2017-02-29",
        ] {
            assert!(Date::parse(bad).is_err(), "{bad} should fail");
        }
        let d = Date::new(2016, 2, 29)?;
        let json = serde_json::to_string(&d).map_err(|e| Error::InvalidArgument {
            op: "test",
            message: e.to_string(),
        })?;
        assert_eq!(json, "\"2016-02-29\"");
        Ok(())
    }
}
