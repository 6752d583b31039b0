//! rspamd's `/checkv2` JSON answer, parsed strictly (serde_json: malformed JSON, a wrong type
//! or a missing `action` is an error; unknown fields are ignored) and cleaned: every text that
//! may reach a reply or a header is printable ASCII, without CR, LF or NUL, and bounded.

use serde::Deserialize;
use serde_json::Value;

/// What rspamd decided (its `action` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Clean,
    Greylist,
    AddHeader,
    RewriteSubject,
    SoftReject,
    Reject,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "no action" => Action::Clean,
            "greylist" => Action::Greylist,
            "add header" => Action::AddHeader,
            "rewrite subject" => Action::RewriteSubject,
            "soft reject" => Action::SoftReject,
            "reject" => Action::Reject,
            _ => return None,
        })
    }

    /// The name rspamd gives it, for logs and notes.
    pub fn name(self) -> &'static str {
        match self {
            Action::Clean => "no action",
            Action::Greylist => "greylist",
            Action::AddHeader => "add header",
            Action::RewriteSubject => "rewrite subject",
            Action::SoftReject => "soft reject",
            Action::Reject => "reject",
        }
    }

    /// rspamd found the message spam: every action that marks or refuses it (greylisting
    /// is a delay, not a verdict).
    pub fn is_spam(self) -> bool {
        matches!(
            self,
            Action::AddHeader | Action::RewriteSubject | Action::SoftReject | Action::Reject
        )
    }
}

/// The answer, as the plugin uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: Action,
    pub score: f64,
    pub required: f64,
    /// Symbol names with their scores, highest first (at most [`MAX_SYMBOLS`]).
    pub symbols: Vec<(String, f64)>,
    /// `messages.smtp_message`, cleaned (None when absent or empty after cleaning).
    pub smtp_message: Option<String>,
    /// `subject`, cleaned: the new Subject of a `rewrite subject`.
    pub subject: Option<String>,
    /// `milter.add_headers`: (name, value), in the order given.
    pub add_headers: Vec<(String, String)>,
    /// `milter.remove_headers`: (name, which: 0 all, n > 0 the n-th, n < 0 the n-th from the end).
    pub remove_headers: Vec<(String, i64)>,
    /// `dkim-signature`: the values of DKIM-Signature fields rspamd made.
    pub dkim_signatures: Vec<String>,
}

/// The longest text kept from the answer (a header value, a reply text).
const MAX_TEXT: usize = 1000;
/// The most symbols kept for the report header, and header edits applied.
pub const MAX_SYMBOLS: usize = 50;
const MAX_EDITS: usize = 50;

#[derive(Deserialize)]
struct Raw {
    action: String,
    score: f64,
    #[serde(default)]
    required_score: f64,
    #[serde(default)]
    symbols: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    messages: Option<Messages>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    milter: Option<Milter>,
    #[serde(default, rename = "dkim-signature")]
    dkim_signature: Option<Value>,
}

#[derive(Deserialize)]
struct Messages {
    #[serde(default)]
    smtp_message: Option<String>,
}

#[derive(Deserialize)]
struct Milter {
    #[serde(default)]
    add_headers: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    remove_headers: Option<serde_json::Map<String, Value>>,
}

/// Parses the body of rspamd's answer.
pub fn parse(body: &[u8]) -> Result<Verdict, String> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
    let action = Action::parse(&raw.action)
        .ok_or_else(|| format!("unknown action '{}'", clean(&raw.action, 40)))?;
    if !raw.score.is_finite() || !raw.required_score.is_finite() {
        return Err("score is not a finite number".into());
    }
    let mut symbols: Vec<(String, f64)> = raw
        .symbols
        .iter()
        .flatten()
        .map(|(name, v)| {
            let score = v.get("score").and_then(Value::as_f64).unwrap_or(0.0);
            (clean_token(name), score)
        })
        .filter(|(name, _)| !name.is_empty())
        .collect();
    symbols.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    symbols.truncate(MAX_SYMBOLS);
    let milter = raw.milter.unwrap_or(Milter {
        add_headers: None,
        remove_headers: None,
    });
    let mut add_headers = Vec::new();
    for (name, v) in milter.add_headers.iter().flatten() {
        let name = header_name(name)?;
        // A value is a string, {"value": "...", "order": n}, or an array of those.
        let values: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let text = match v {
                Value::String(s) => s.as_str(),
                Value::Object(o) => o.get("value").and_then(Value::as_str).unwrap_or_default(),
                _ => return Err(format!("milter header {name}: not a string")),
            };
            add_headers.push((name.clone(), clean(text, MAX_TEXT)));
        }
    }
    let mut remove_headers = Vec::new();
    for (name, v) in milter.remove_headers.iter().flatten() {
        let which = v
            .as_i64()
            .ok_or_else(|| format!("remove {}: not a number", clean(name, 40)))?;
        remove_headers.push((header_name(name)?, which));
    }
    if add_headers.len() + remove_headers.len() > MAX_EDITS {
        return Err(format!("more than {MAX_EDITS} header edits"));
    }
    let dkim_signatures = match raw.dkim_signature {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => return Err("dkim-signature is not a string".into()),
    };
    Ok(Verdict {
        action,
        score: raw.score,
        required: raw.required_score,
        symbols,
        smtp_message: nonempty(raw.messages.and_then(|m| m.smtp_message), 200),
        subject: nonempty(raw.subject, MAX_TEXT),
        add_headers,
        remove_headers,
        dkim_signatures: dkim_signatures
            .iter()
            .take(4)
            .map(|s| clean(s, 4 * MAX_TEXT))
            .collect(),
    })
}

fn nonempty(s: Option<String>, max: usize) -> Option<String> {
    s.map(|s| clean(&s, max)).filter(|s| !s.trim().is_empty())
}

/// A header field name (RFC 5322 §3.6.8: printable ASCII but `:`), at most 76 bytes.
fn header_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 76
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    match ok {
        true => Ok(name.to_string()),
        false => Err(format!("bad header name '{}'", clean(name, 40))),
    }
}

/// Printable ASCII and spaces only (anything else, CR, LF and NUL included, becomes `?`; a tab
/// a space), at most `max` characters, trimmed.
pub fn clean(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .take(max)
        .map(|c| match c {
            ' '..='~' => c,
            '\t' => ' ',
            _ => '?',
        })
        .collect();
    out.trim().to_string()
}

/// A symbol name: letters, digits, `_`, `-` and `.` only, at most 64.
fn clean_token(s: &str) -> String {
    s.chars()
        .take(64)
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect()
}
