//! `fix`: settle inconsistent objects by naming the OSDs whose copies are bad (Vitastor's
//! command, options and output). The objects come from `--objects` or stdin, as text
//! (`0x<inode>:0x<stripe>` anywhere, e.g. `describe` output) or as JSON
//! (`[{"inode":"0x...","stripe":"0x..."}]`, e.g. `describe --json`).

use crate::etcd::Context;
use serde_json::json;
use std::collections::BTreeSet;
use std::io::Read;
use vitastor_client::fix::FixOptions;

#[derive(clap::Args, Debug)]
pub struct FixArgs {
    /// Objects to fix (text or JSON); read from stdin when absent.
    #[arg(long)]
    pub objects: Option<String>,
    /// Remove the inconsistent copies on these OSDs (comma-separated).
    #[arg(long = "bad-osds", value_delimiter = ',')]
    pub bad_osds: Vec<u64>,
    /// Only remove EC part N (0 to pg_size-1).
    #[arg(long)]
    pub part: Option<u64>,
    /// `no`: remove the copies even if the primary does not report them inconsistent.
    #[arg(long)]
    pub check: Option<String>,
}

/// A number as Vitastor's tools write it: `0x` hex or decimal.
fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The objects in `text`: a JSON list, or every `inode:stripe` word.
fn parse_objects(text: &str) -> Result<BTreeSet<(u64, u64)>, String> {
    let text = text.trim();
    let mut objects = BTreeSet::new();
    if text.starts_with('[') {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON object list: {e}"))?;
        for item in list {
            let field = |name: &str| match &item[name] {
                serde_json::Value::String(s) => parse_number(s),
                value => value.as_u64(),
            };
            match (field("inode"), field("stripe")) {
                (Some(inode), Some(stripe)) if inode != 0 => drop(objects.insert((inode, stripe))),
                _ => eprintln!("invalid JSON object ID in input: {item}"),
            }
        }
        return Ok(objects);
    }
    let words = text.split(|c: char| c.is_whitespace() || c == ',' || c == ';');
    for word in words.filter(|w| w.contains(':')) {
        let (inode, stripe) = word.split_once(':').expect("checked");
        match (parse_number(inode), parse_number(stripe)) {
            (Some(inode), Some(stripe)) if inode != 0 => drop(objects.insert((inode, stripe))),
            _ => eprintln!("invalid object ID in input: {word}"),
        }
    }
    Ok(objects)
}

pub async fn fix(ctx: &Context, args: FixArgs) -> Result<(), String> {
    let text = match args.objects {
        Some(text) => text,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("reading the object list from stdin: {e}"))?;
            text
        }
    };
    let objects = parse_objects(&text)?;
    if objects.is_empty() {
        return Err("Object list is not specified".into());
    }
    if args.bad_osds.is_empty() {
        return Err("OSDs are not specified".into());
    }
    let check = !matches!(args.check.as_deref(), Some("no" | "false" | "0"));
    let options = FixOptions {
        bad_osds: args.bad_osds,
        part: args.part,
        check,
    };
    let mut removed = Vec::new();
    let mut failures = 0;
    for (inode, stripe) in objects {
        match ctx.client.fix_object(inode, stripe, &options).await {
            Ok(copies) => removed.extend(copies),
            Err(error) => {
                eprintln!("{error}");
                failures += 1;
            }
        }
    }
    if ctx.json {
        let items: Vec<serde_json::Value> = removed
            .iter()
            .map(|c| json!({"inode": c.inode, "stripe": c.stripe, "part": c.part, "osd_num": c.osd_num}))
            .collect();
        crate::output::json(&serde_json::Value::Array(items));
    } else {
        for c in &removed {
            println!(
                "Removed {:#x}:{:#x} (part {}) from OSD {}",
                c.inode, c.stripe, c.part, c.osd_num
            );
        }
    }
    match failures {
        0 => Ok(()),
        n => Err(format!("{n} object(s) could not be fixed")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_objects;

    #[test]
    fn objects_come_as_text_or_json() {
        let text = "0x1000000000001:0x20000 part 0 on OSD 2 inconsistent\n\
                    0x1000000000001:0x20000 part 0 on OSD 1 inconsistent, 281474976710657:0";
        let expected = [(0x1000000000001, 0), (0x1000000000001, 0x20000)];
        assert_eq!(parse_objects(text).unwrap(), expected.into());
        let json = r#"[{"inode":"0x1000000000001","stripe":"0x20000","part":0},
                      {"inode":281474976710657,"stripe":0}]"#;
        assert_eq!(parse_objects(json).unwrap(), expected.into());
        assert!(parse_objects("[{").is_err());
        assert!(parse_objects("nothing here").unwrap().is_empty());
    }
}
