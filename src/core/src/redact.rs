//! Removing secrets from statement text before optidb stores it: passwords in role commands
//! (`PASSWORD '...'`) and in connection strings (`password=...`), and keys given to pgcrypto's
//! symmetric functions.

use regex::Regex;
use std::sync::OnceLock;

fn patterns() -> &'static [(Regex, &'static str)] {
    static P: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    P.get_or_init(|| {
        [
            // PASSWORD 'x', ENCRYPTED PASSWORD 'x', PASSWORD E'x' ('' escapes included)
            (r"(?i)(\bpassword\s+)[eE]?'(?:[^']|'')*'", "${1}'***'"),
            // conninfo: password=x / password = 'x'
            (
                r"(?i)(\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s'\x22;]+)",
                "${1}***",
            ),
            // pgp_sym_encrypt(data, 'key' ...), pgp_sym_decrypt(data, 'key' ...)
            (
                r"(?i)(\bpgp_sym_(?:en|de)crypt(?:_bytea)?\s*\([^,]*,\s*)'(?:[^']|'')*'",
                "${1}'***'",
            ),
        ]
        .into_iter()
        .map(|(re, with)| (Regex::new(re).expect("valid pattern"), with))
        .collect()
    })
}

/// Words every pattern starts with: text without any of them is returned as is, without
/// running (or, in a new session, compiling) the expressions. Slowest-execution texts are
/// captured inside users' statements, so the common case must stay cheap.
const TRIGGERS: [&str; 2] = ["password", "pgp_sym_"];

fn may_hold_secret(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    TRIGGERS.iter().any(|t| {
        bytes
            .windows(t.len())
            .any(|w| w.eq_ignore_ascii_case(t.as_bytes()))
    })
}

/// Words that mark a statement whose parameter values may be secrets (a password hash, an API
/// token): optidb keeps no sampled values of such statements.
const SECRET_WORDS: [&str; 6] = [
    "password",
    "pgp_sym_",
    "secret",
    "token",
    "api_key",
    "credential",
];

/// True when the statement's parameter values must not be kept.
pub fn mentions_secret(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    SECRET_WORDS.iter().any(|t| {
        bytes
            .windows(t.len())
            .any(|w| w.eq_ignore_ascii_case(t.as_bytes()))
    })
}

pub fn redact_secrets(sql: &str) -> String {
    if !may_hold_secret(sql) {
        return sql.to_string();
    }
    let mut text = sql.to_string();
    for (re, with) in patterns() {
        text = re.replace_all(&text, *with).into_owned();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_about_secrets_are_recognised() {
        for sql in [
            "UPDATE users SET password_hash = $1 WHERE id = $2",
            "SELECT * FROM sessions WHERE Token = $1",
            "INSERT INTO vault (secret) VALUES ($1)",
        ] {
            assert!(mentions_secret(sql), "{sql}");
        }
        assert!(!mentions_secret(
            "SELECT * FROM orders WHERE customer_id = $1"
        ));
    }

    #[test]
    fn passwords_and_keys_are_redacted() {
        assert_eq!(
            redact_secrets("ALTER ROLE app WITH ENCRYPTED PASSWORD 'it''s s3cret' VALID UNTIL 'x'"),
            "ALTER ROLE app WITH ENCRYPTED PASSWORD '***' VALID UNTIL 'x'"
        );
        assert_eq!(
            redact_secrets("SELECT dblink_connect('host=db user=a password=hunter2 dbname=x')"),
            "SELECT dblink_connect('host=db user=a password=*** dbname=x')"
        );
        assert_eq!(
            redact_secrets("SELECT pgp_sym_decrypt(col, 'topsecret') FROM t WHERE id = 4"),
            "SELECT pgp_sym_decrypt(col, '***') FROM t WHERE id = 4"
        );
    }

    #[test]
    fn trigger_words_match_in_any_case() {
        assert_eq!(
            redact_secrets("alter role app Password 'x'"),
            "alter role app Password '***'"
        );
        assert_eq!(
            redact_secrets("SELECT PGP_SYM_ENCRYPT(d, 'k')"),
            "SELECT PGP_SYM_ENCRYPT(d, '***')"
        );
    }

    #[test]
    fn ordinary_text_is_untouched() {
        let sql = "SELECT id FROM users WHERE name = 'password' AND password_hash IS NOT NULL";
        assert_eq!(redact_secrets(sql), sql);
    }
}
