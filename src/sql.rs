//! Building SQL text safely: identifiers are always quoted, literals always escaped. Used wherever
//! steep builds statements that name user objects.

use anyhow::{bail, Result};

/// `"name"` with embedded quotes doubled. Always quotes, so keywords and case are preserved.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled (standard_conforming_strings, on since PostgreSQL 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `schema.table` as SQL writes it.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Parse a possibly schema-qualified name as SQL does: unquoted parts fold to lower case, quoted
/// parts keep case, dots and `""`. `my."Big Table"` -> (Some("my"), "Big Table").
pub fn parse_qualified_name(input: &str) -> Result<(Option<String>, String)> {
    let mut parts = Vec::new();
    let mut chars = input.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => bail!("unterminated quoted identifier in {input:?}"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' || c.is_whitespace() {
                    bail!(
                        "invalid name {input:?}: quote identifiers that contain spaces or quotes, \
                         e.g. '\"My Schema\".\"My Table\"'"
                    );
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            bail!("invalid name {input:?}: empty identifier");
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => continue,
            Some(c) => bail!("invalid name {input:?}: unexpected {c:?} after an identifier"),
        }
    }
    match parts.len() {
        1 => Ok((None, parts.remove(0))),
        2 => {
            let table = parts.pop().expect("two parts");
            Ok((parts.pop(), table))
        }
        _ => bail!("invalid name {input:?}: use table or schema.table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(qualified("public", "Tåble x"), "\"public\".\"Tåble x\"");
    }

    #[test]
    fn qualified_names() {
        let p = |s| parse_qualified_name(s).unwrap();
        assert_eq!(p("Orders"), (None, "orders".into()));
        assert_eq!(p("Sales.Orders"), (Some("sales".into()), "orders".into()));
        assert_eq!(
            p(r#""My ""Schema""".".dotted.""#),
            (Some("My \"Schema\"".into()), ".dotted.".into())
        );
        assert_eq!(p("ünï.t"), (Some("ünï".into()), "t".into()));
        for bad in ["", "a.", ".a", "a.b.c", "\"open", "a b", "a\"b\""] {
            assert!(parse_qualified_name(bad).is_err(), "{bad}");
        }
    }
}
