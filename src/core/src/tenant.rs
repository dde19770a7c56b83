//! Tenant families: the same index advice in many schemas. A SaaS that gives each tenant its
//! own schema (or role and search_path) runs the same statement text against a table of the
//! same definition in each; the advisor then advises the same index once per schema. Advice
//! with the same family key (kind, table name, index elements, the served statements'
//! fingerprints and the table's structural signature: src/api/tenant_advice.rs) is one tenant
//! family, shown once by `optidb.tenant_advice()` and simulated on a sample of its tenants.

/// How many tenants of a family are simulated at each scan: the first, last and middle ones
/// in schema-name order (a spread, and the same tenants from one scan to the next).
pub const SAMPLE_SIZE: usize = 3;

/// For each advice (its family key, None when it has none, and its schema): whether to
/// simulate it. Advice alone in its family is always simulated; of a family, SAMPLE_SIZE.
pub fn sampled(members: &[(Option<&str>, &str)]) -> Vec<bool> {
    let mut keep = vec![true; members.len()];
    let mut families: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, (key, _)) in members.iter().enumerate() {
        if let Some(key) = key {
            families.entry(key).or_default().push(i);
        }
    }
    for mut family in families.into_values() {
        if family.len() <= SAMPLE_SIZE {
            continue;
        }
        family.sort_by(|a, b| members[*a].1.cmp(members[*b].1));
        let last = family.len() - 1;
        let picks = [0, last / 2, last];
        for (pos, i) in family.iter().enumerate() {
            keep[*i] = picks.contains(&pos);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_alone_or_in_a_small_family_is_always_simulated() {
        let m = [
            (None, "a"),
            (Some("k"), "t1"),
            (Some("k"), "t2"),
            (Some("other"), "x"),
        ];
        assert_eq!(sampled(&m), vec![true; 4]);
    }

    #[test]
    fn a_large_family_is_simulated_on_its_first_middle_and_last_tenant() {
        let schemas: Vec<String> = (0..1000).map(|i| format!("t{i:04}")).collect();
        // Given in reverse: the sample follows schema names, not the order of the advice.
        let m: Vec<(Option<&str>, &str)> = schemas
            .iter()
            .rev()
            .map(|s| (Some("k"), s.as_str()))
            .collect();
        let keep = sampled(&m);
        let picked: Vec<&str> = m
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|((_, s), _)| *s)
            .collect();
        assert_eq!(picked, vec!["t0999", "t0499", "t0000"]);
    }

    #[test]
    fn families_are_sampled_apart() {
        let m = [
            (Some("a"), "s1"),
            (Some("a"), "s2"),
            (Some("a"), "s3"),
            (Some("a"), "s4"),
            (Some("b"), "s1"),
        ];
        assert_eq!(sampled(&m), vec![true, true, false, true, true]);
    }
}
