//! A PostgreSQL error as one line: the server's message with its detail and hint, without the
//! driver's "db error:" prefix. One wording for the CLI, the engine and the worker.

/// The error as text: `message (detail) (hint)` from the server, or the driver's own text.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => one_line(d.message(), d.detail(), d.hint()),
        None => e.to_string(),
    }
}

/// A server error's fields as one line (also for errors read off the wire directly).
pub fn one_line(message: &str, detail: Option<&str>, hint: Option<&str>) -> String {
    let mut s = message.to_string();
    for extra in [detail, hint].into_iter().flatten() {
        s.push_str(&format!(" ({extra})"));
    }
    s
}

/// The error for `?`: a server error as [`describe`] puts it; others keep their source chain.
pub fn db_error(e: postgres::Error) -> anyhow::Error {
    if e.as_db_error().is_some() {
        anyhow::anyhow!(describe(&e))
    } else {
        anyhow::Error::new(e)
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn detail_and_hint_follow_the_message() {
        assert_eq!(one_line("m", None, None), "m");
        assert_eq!(
            one_line("m", Some("d"), Some("h")),
            "m (d) (h)",
            "detail then hint, each in parentheses"
        );
        assert_eq!(one_line("m", None, Some("h")), "m (h)");
    }
}
