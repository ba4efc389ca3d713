//! Dotted-key edits of TOML documents: `--set key=value` overrides and sweep expansion.

use anyhow::{Result, bail};
use toml::{Table, Value};

/// Parses the right-hand side of `--set key=value`: a TOML literal (`0.1`, `true`, `[1, 2]`,
/// `"text"`) or, when it is not one, a bare string (`tanh`).
pub fn parse_value(text: &str) -> Value {
    let doc = format!("v = {text}");
    match doc.parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(text.to_string())),
        Err(_) => Value::String(text.to_string()),
    }
}

/// `text` cut to its first 60 characters (with `…` when cut), for quoting user input in
/// messages.
pub fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Splits `key=value`.
///
/// # Errors
/// When there is no `=` or the key is empty.
pub fn split_assignment(assignment: &str) -> Result<(&str, Value)> {
    let Some((key, value)) = assignment.split_once('=') else {
        bail!("--set {:?}: expected KEY=VALUE, e.g. optimizer.lr=0.1", shorten(assignment));
    };
    let key = key.trim();
    if key.is_empty() {
        bail!("--set {:?}: the key is empty", shorten(assignment));
    }
    Ok((key, parse_value(value.trim())))
}

/// Most parts of a dotted key. The deepest real key has four
/// (`optimizer.spectral.power.alpha`); a deeper one would only build nested tables whose
/// recursive handling could exhaust the stack.
pub const MAX_KEY_DEPTH: usize = 16;

/// Sets `dotted.key` in `table` to `value`, creating intermediate tables.
///
/// # Errors
/// When an intermediate key holds a non-table value, a part of the key is empty, or the key
/// has more than [`MAX_KEY_DEPTH`] parts.
pub fn set(table: &mut Table, dotted_key: &str, value: Value) -> Result<()> {
    let parts: Vec<&str> = dotted_key.split('.').collect();
    if parts.len() > MAX_KEY_DEPTH {
        bail!(
            "key {:?} has {} dotted parts, more than the {MAX_KEY_DEPTH} any key has",
            shorten(dotted_key),
            parts.len()
        );
    }
    if parts.iter().any(|p| p.is_empty()) {
        bail!("key {:?} has an empty part: write it as `table.key`", shorten(dotted_key));
    }
    let (last, parents) = parts.split_last().expect("split always yields one part");
    let mut current = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = current.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new()));
        match entry {
            Value::Table(t) => current = t,
            other => bail!(
                "key {:?}: {:?} is a {}, not a table",
                dotted_key,
                parts[..=depth].join("."),
                other.type_str()
            ),
        }
    }
    current.insert(last.to_string(), value);
    Ok(())
}

/// Reads `dotted.key` from `table`.
pub fn get<'a>(table: &'a Table, dotted_key: &str) -> Option<&'a Value> {
    let mut parts = dotted_key.split('.');
    let first = parts.next()?;
    let mut current = table.get(first)?;
    for part in parts {
        current = current.as_table()?.get(part)?;
    }
    Some(current)
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `name`, if it is close enough to be a plausible typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= (c.len().max(name.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_get_dotted_keys() {
        let mut t: Table = "[optimizer]\nlr = 0.1\n".parse().unwrap();
        set(&mut t, "optimizer.lr", parse_value("0.3")).unwrap();
        set(&mut t, "model.activation", parse_value("relu")).unwrap();
        set(&mut t, "seeds", parse_value("[1, 2]")).unwrap();
        assert_eq!(get(&t, "optimizer.lr"), Some(&Value::Float(0.3)));
        assert_eq!(get(&t, "model.activation"), Some(&Value::String("relu".into())));
        assert_eq!(get(&t, "seeds").and_then(Value::as_array).map(Vec::len), Some(2));
        let err = set(&mut t, "optimizer.lr.x", Value::Integer(1)).unwrap_err();
        assert!(err.to_string().contains("optimizer.lr"), "{err}");
        assert!(set(&mut t, "train..epochs", Value::Integer(1)).is_err());
        // Deep keys are refused, not built into tables whose drop would overflow the stack.
        let deep = vec!["a"; 100_000].join(".");
        let err = set(&mut t, &deep, Value::Integer(1)).unwrap_err();
        assert!(err.to_string().contains("100000 dotted parts"), "{err}");
        set(&mut t, &vec!["b"; MAX_KEY_DEPTH].join("."), Value::Integer(1)).unwrap();
    }

    #[test]
    fn assignments_need_an_equals_sign() {
        assert!(split_assignment("optimizer.lr").is_err());
        assert!(split_assignment("=3").is_err());
        let (k, v) = split_assignment("train.epochs = 4").unwrap();
        assert_eq!((k, v), ("train.epochs", Value::Integer(4)));
    }

    #[test]
    fn suggestions_find_typos_only() {
        let keys = ["lambda", "lr", "spectral", "scope"];
        assert_eq!(closest("lamda", keys), Some("lambda"));
        assert_eq!(closest("spectrl", keys), Some("spectral"));
        assert_eq!(closest("momentum", keys), None);
    }
}
