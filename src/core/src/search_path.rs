//! A search_path setting as PostgreSQL reads it (`SplitIdentifierString`): comma-separated
//! names, unquoted ones folded to lower case, `"..."` quoted ones kept as written with `""` for
//! a quote. `$user` (quoted or not) stands for the role's own schema.
//!
//! Why optidb needs it: a replay with `"$user"` on the path would find a schema named like the
//! statement's role that someone else created after the statement ran (it needs no more than
//! CREATE on the database) and run that someone's look-alike relations and functions with the
//! role's rights, including names resolved inside the bodies of the statement's functions.
//! `expand_user` replaces `$user` with the schema's name only when the caller vouched for it.

/// One entry of the path: a schema name, or `$user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Schema(String),
    User,
}

/// The entries of a search_path setting, or None when it is not valid syntax.
pub fn entries(path: &str) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    let mut chars = path.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| is_space(*c)) {
            chars.next();
        }
        if chars.peek().is_none() {
            // "" is an empty path; "a," is not valid.
            return out.is_empty().then_some(out);
        }
        let name = if chars.peek() == Some(&'"') {
            chars.next();
            let mut name = String::new();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        name.push('"');
                    }
                    '"' => break,
                    c => name.push(c),
                }
            }
            if name.is_empty() {
                return None;
            }
            name
        } else {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' || is_space(c) {
                    break;
                }
                name.push(c.to_ascii_lowercase());
                chars.next();
            }
            if name.is_empty() {
                return None;
            }
            name
        };
        out.push(if name == "$user" {
            Entry::User
        } else {
            Entry::Schema(name)
        });
        while chars.peek().is_some_and(|c| is_space(*c)) {
            chars.next();
        }
        match chars.next() {
            None => return Some(out),
            Some(',') if chars.clone().any(|c| !is_space(c)) => {}
            Some(_) => return None,
        }
    }
}

/// PostgreSQL's `scanner_isspace`: only these separate names (a no-break space is part of one).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// `name` as an identifier in a setting: quoted unless it is plain lower case.
pub fn quote(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The path with `$user` replaced by the role's schema `role` when `keep_user_schema`, dropped
/// otherwise; every other entry is kept, quoted where needed. None when `path` is not valid.
pub fn expand_user(path: &str, role: &str, keep_user_schema: bool) -> Option<String> {
    let kept: Vec<String> = entries(path)?
        .into_iter()
        .filter_map(|e| match e {
            Entry::Schema(s) => Some(quote(&s)),
            Entry::User => keep_user_schema.then(|| quote(role)),
        })
        .collect();
    Some(kept.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_postgres() {
        assert_eq!(
            entries("\"$user\", public").unwrap(),
            vec![Entry::User, Entry::Schema("public".into())]
        );
        assert_eq!(
            entries(" App ,\"My \"\"Schema\"\"\",$user").unwrap(),
            vec![
                Entry::Schema("app".into()),
                Entry::Schema("My \"Schema\"".into()),
                Entry::User
            ]
        );
        assert_eq!(entries("").unwrap(), vec![]);
        assert_eq!(entries("a,"), None);
        assert_eq!(entries("a b"), None);
        assert_eq!(entries("\"unterminated"), None);
        assert_eq!(entries("\"\""), None);
        // A no-break space is not a separator for PostgreSQL: one (odd) name.
        assert_eq!(
            entries("pub\u{a0}lic").unwrap(),
            vec![Entry::Schema("pub\u{a0}lic".into())]
        );
    }

    #[test]
    fn user_schema_is_kept_only_when_vouched_for() {
        assert_eq!(
            expand_user("\"$user\", public", "alice", true).unwrap(),
            "alice, public"
        );
        assert_eq!(
            expand_user("\"$user\", public", "alice", false).unwrap(),
            "public"
        );
        assert_eq!(
            expand_user("$user, \"Sales\"", "Bob", true).unwrap(),
            "\"Bob\", \"Sales\""
        );
        assert_eq!(
            expand_user("app, public", "x", false).unwrap(),
            "app, public"
        );
    }

    #[test]
    fn quoting_round_trips() {
        for name in ["public", "Sales", "my schema", "a\"b", "_x1", "1abc"] {
            let quoted = quote(name);
            assert_eq!(entries(&quoted).unwrap(), vec![Entry::Schema(name.into())]);
        }
    }
}
