//! A search_path setting as PostgreSQL reads it (`SplitIdentifierString`): comma-separated
//! names, unquoted ones folded to lower case, `"..."` quoted ones kept as written with `""` for
//! a quote. `$user` (quoted or not) stands for the role's own schema.
//!
//! Why optidb needs it: a replay with `"$user"` on the path would find a schema named like the
//! statement's role that someone else created after the statement ran (it needs no more than
//! CREATE on the database) and run that someone's look-alike relations and functions with the
//! role's rights, including names resolved inside the bodies of the statement's functions.
//! `trusted_only` keeps `$user` and each schema only when the caller vouched for it (for a
//! recorded path: the name still denotes the schema the statement found; for a configured one:
//! the schema exists and belongs to a role the statement's owner trusts).

/// One entry of the path: a schema name, or `$user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    Schema(String),
    User,
}

/// The names of a comma-separated identifier list as PostgreSQL splits one (SplitIdentifierString:
/// double quotes keep case, commas and spaces, "" is a quote; unquoted names are lowercased), or
/// None when it is not valid syntax.
pub fn identifiers(list: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = list.chars().peekable();
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
        out.push(name);
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

/// The elements of a search_path setting, or None when it is not valid syntax.
pub fn elements(path: &str) -> Option<Vec<Element>> {
    identifiers(path).map(|names| {
        names
            .into_iter()
            .map(|name| {
                if name == "$user" {
                    Element::User
                } else {
                    Element::Schema(name)
                }
            })
            .collect()
    })
}

/// PostgreSQL's `scanner_isspace`: only these separate names (a no-break space is part of one).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// `name` as an identifier in a setting: quoted unless it is plain lower case.
pub fn quote(name: &str) -> String {
    crate::predicates::quote_unless(name, crate::predicates::is_lower_case_name(name))
}

/// The schema each element names, `$user` spelled out as `role`.
pub fn schema_names(elements: &[Element], role: &str) -> Vec<String> {
    elements
        .iter()
        .map(|e| match e {
            Element::Schema(s) => s.clone(),
            Element::User => role.to_string(),
        })
        .collect()
}

/// The path a replay as `role` may use, quoted where needed: `$user` becomes `role`'s schema
/// when `trusted` vouches for it and is dropped otherwise; other schemas are kept when `trusted`
/// vouches for them, and `pg_temp` (the replaying session's own temporary schema) always.
pub fn trusted_only(elements: &[Element], role: &str, trusted: impl Fn(&str) -> bool) -> String {
    let kept: Vec<String> = elements
        .iter()
        .filter_map(|e| match e {
            Element::User => trusted(role).then(|| quote(role)),
            Element::Schema(s) => (s == "pg_temp" || trusted(s)).then(|| quote(s)),
        })
        .collect();
    kept.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_lists_split_like_postgres() {
        assert_eq!(
            identifiers(r#"Deploy, "deploy,Mallory" , "a""b""#),
            Some(vec![
                "deploy".into(),
                "deploy,Mallory".into(),
                "a\"b".into()
            ])
        );
        assert_eq!(identifiers("a,"), None);
        assert_eq!(identifiers(""), Some(vec![]));
    }

    #[test]
    fn splits_like_postgres() {
        assert_eq!(
            elements("\"$user\", public").unwrap(),
            vec![Element::User, Element::Schema("public".into())]
        );
        assert_eq!(
            elements(" App ,\"My \"\"Schema\"\"\",$user").unwrap(),
            vec![
                Element::Schema("app".into()),
                Element::Schema("My \"Schema\"".into()),
                Element::User
            ]
        );
        assert_eq!(elements("").unwrap(), vec![]);
        assert_eq!(elements("a,"), None);
        assert_eq!(elements("a b"), None);
        assert_eq!(elements("\"unterminated"), None);
        assert_eq!(elements("\"\""), None);
        // A no-break space is not a separator for PostgreSQL: one (odd) name.
        assert_eq!(
            elements("pub\u{a0}lic").unwrap(),
            vec![Element::Schema("pub\u{a0}lic".into())]
        );
    }

    #[test]
    fn only_vouched_for_schemas_are_kept() {
        let alice_only = |s: &str| s == "alice" || s == "public";
        let kept = |path: &str, role: &str, trusted: &dyn Fn(&str) -> bool| {
            trusted_only(&elements(path).unwrap(), role, trusted)
        };
        assert_eq!(
            kept("\"$user\", public", "alice", &alice_only),
            "alice, public"
        );
        assert_eq!(kept("\"$user\", public", "bob", &alice_only), "public");
        assert_eq!(
            kept("$user, \"Sales\"", "Bob", &|_| true),
            "\"Bob\", \"Sales\""
        );
        // A schema nobody vouches for (it may not exist yet, or is not the one recorded) is
        // left out; pg_temp holds nothing a restricted replay may use anyway.
        assert_eq!(
            kept("app, public, pg_temp", "x", &alice_only),
            "public, pg_temp"
        );
        assert_eq!(kept("app, $user, public", "x", &|_| false), "");
        assert_eq!(
            schema_names(&elements("$user, \"A\", b").unwrap(), "x"),
            vec!["x", "A", "b"]
        );
    }

    #[test]
    fn quoting_round_trips() {
        for name in ["public", "Sales", "my schema", "a\"b", "_x1", "1abc"] {
            let quoted = quote(name);
            assert_eq!(
                elements(&quoted).unwrap(),
                vec![Element::Schema(name.into())]
            );
        }
    }
}
