//! Deserializers for fields that Vitastor writes in more than one JSON shape.

use serde::{Deserialize, Deserializer};

/// An OSD number given as a JSON number or a numeric string (`4` or `"4"`).
pub fn osd_num<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u64),
        Text(String),
    }
    match NumberOrString::deserialize(deserializer)? {
        NumberOrString::Number(number) => Ok(number),
        NumberOrString::Text(text) => text
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("OSD number {text:?} is not a number"))),
    }
}

/// A list of OSD numbers, each a number or a numeric string.
pub fn osd_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Item(#[serde(deserialize_with = "osd_num")] u64);
    let items = Vec::<Item>::deserialize(deserializer)?;
    Ok(items.into_iter().map(|Item(number)| number).collect())
}

/// A list of OSD sets (lists of OSD numbers).
pub fn osd_sets<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Vec<u64>>, D::Error> {
    #[derive(Deserialize)]
    struct Set(#[serde(deserialize_with = "osd_list")] Vec<u64>);
    let sets = Vec::<Set>::deserialize(deserializer)?;
    Ok(sets.into_iter().map(|Set(set)| set).collect())
}

/// Tags given as one string or a list of strings (`"nvme"` or `["nvme","ssd"]`).
pub fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(OneOrMany::One(one)) => vec![one],
        Some(OneOrMany::Many(many)) => many,
    })
}

/// A number written either as a JSON number or a decimal string (`"1767225600.1"`).
pub fn number_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(f64),
        Text(String),
    }
    match NumberOrString::deserialize(deserializer)? {
        NumberOrString::Number(number) => Ok(number),
        NumberOrString::Text(text) => text
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a number"))),
    }
}
