//! [`Dur`], the duration type of configuration files: written the human way
//! (`"250ms"`, `"5s"`, `"2m"`) and parsed with humantime. A leaf module, so
//! both the config file and the task settings it embeds can use it.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written the human way in TOML: `"250ms"`, `"5s"`, `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: {e} (e.g. \"5s\", \"250ms\")"
            ))
        })
    }
}
