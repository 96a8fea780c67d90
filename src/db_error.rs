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

/// An error the server sent: its SQLSTATE, and its text as [`one_line`] puts it (which is what
/// it displays). Callers that decide by the kind of error look at `code`, never at the text.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub code: String,
    pub text: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for ServerError {}

/// The error for `?`: a server error as [`describe`] puts it, with its SQLSTATE kept (see
/// [`sqlstate`]); others keep their source chain.
pub fn db_error(e: postgres::Error) -> anyhow::Error {
    match e.code() {
        Some(code) => ServerError {
            code: code.code().to_string(),
            text: describe(&e),
        }
        .into(),
        None => anyhow::Error::new(e),
    }
}

/// The SQLSTATE of a server error, through any context added on the way up.
pub fn sqlstate(e: &anyhow::Error) -> Option<&str> {
    e.downcast_ref::<ServerError>()
        .map(|s| s.code.as_str())
        .or_else(|| {
            e.downcast_ref::<postgres::Error>()
                .and_then(|p| p.code())
                .map(|c| c.code())
        })
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
