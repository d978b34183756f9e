//! [`Dur`], the duration type of configuration files: written the human way
//! (`"250ms"`, `"5s"`, `"2m"`) and parsed with humantime. A leaf module, so
//! both the config file and the task settings it embeds can use it.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_read_back_unchanged() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::new(3600, 7),
        ] {
            let text = toml::Value::try_from(Dur(d)).unwrap();
            assert_eq!(text.clone().try_into::<Dur>().unwrap(), Dur(d), "{text}");
        }
    }
}
