//! Answers to plain-language questions, grounded in stored facts only.
//!
//! `parse` maps a question to an intent with keyword rules (no model, nothing to invent). The
//! SQL side reads the facts an intent needs and composes the answer with `AnswerBuilder`: a
//! sentence is only said when every fact it names was found, and every number in the final
//! text must appear in some fact's value (`ungrounded_numbers` checks it), so an answer can
//! always be traced back to the rows it came from.

use std::sync::OnceLock;

use regex::Regex;

/// What the question asks for; the id is the statement it is about, when known.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    WhySlow(Option<i64>),
    WhatIndex(Option<i64>),
    ShowImpact(Option<i64>),
    WhatChanged(Option<i64>),
    TopBottlenecks,
    Health,
    Help,
}

impl Intent {
    /// Stable name, as stored in `Answer::intent`.
    pub fn name(&self) -> &'static str {
        match self {
            Intent::WhySlow(_) => "why_slow",
            Intent::WhatIndex(_) => "what_index",
            Intent::ShowImpact(_) => "show_impact",
            Intent::WhatChanged(_) => "what_changed",
            Intent::TopBottlenecks => "top_bottlenecks",
            Intent::Health => "health",
            Intent::Help => "help",
        }
    }

    pub fn query_id(&self) -> Option<i64> {
        match self {
            Intent::WhySlow(id)
            | Intent::WhatIndex(id)
            | Intent::ShowImpact(id)
            | Intent::WhatChanged(id) => *id,
            _ => None,
        }
    }
}

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid pattern"))
}

macro_rules! pattern {
    ($name:ident, $re:expr) => {
        fn $name() -> &'static Regex {
            static CELL: OnceLock<Regex> = OnceLock::new();
            regex(&CELL, $re)
        }
    };
}

pattern!(
    id_pattern,
    r"(?i)(?:\b(?:query|statement|queryid|query_id|id)\s*#?\s*|#\s*)(-?\d+)\b"
);
pattern!(
    impact_words,
    r"(?i)\bimpact|\bgains?\b|simulat|\bbenefit|\bspeed\s*-?\s*up|how much faster"
);
pattern!(
    changed_words,
    r"(?i)\bchang(?:e|ed|es|ing)\b|\bregress|\bdifferen|\bdiffer\b"
);
pattern!(
    index_words,
    r"(?i)\bind(?:ex|exes|exing|ices)\b|\brecommend"
);
pattern!(add_words, r"(?i)\b(?:add|create)\b");
pattern!(
    asking_words,
    r"(?i)\b(?:what|which|should|could|can|would|need|do|shall)\b"
);
pattern!(
    slow_words,
    r"(?i)\bwhy\b|\bslow(?:er|ly|ness|s)?\b|\btak(?:es|ing) so long\b"
);
pattern!(
    top_words,
    r"(?i)\btop\b|\bbottlenecks?\b|\bslowest\b|\bworst\b|\bheaviest\b|\bmost expensive\b|\b(?:which|what) (?:queries|statements)\b"
);
pattern!(
    health_words,
    r"(?i)\bhealth(?:y)?\b|\bstatus\b|\bok(?:ay)?\b|\ball good\b|\bhow is the database\b"
);

/// Recognises the intent of `question` (case-insensitive keywords). `query_id`, when given,
/// is the statement asked about; otherwise an id written in the text (`query 42`,
/// `query #42`, `#42`, `statement 42`, `id 42`) is used.
pub fn parse(question: &str, query_id: Option<i64>) -> Intent {
    let id = query_id.or_else(|| id_in(question));
    let q = question;
    let has = |re: fn() -> &'static Regex| re().is_match(q);
    // Ordered most specific first: "impact of the index" is about impact, "slowest" is a
    // ranking, not one statement's slowness (unless a statement is named).
    if has(impact_words) {
        Intent::ShowImpact(id)
    } else if has(changed_words) {
        Intent::WhatChanged(id)
    } else if has(index_words) || (has(add_words) && has(asking_words)) {
        Intent::WhatIndex(id)
    } else if has(slow_words) && !(has(top_words) && id.is_none()) {
        Intent::WhySlow(id)
    } else if has(top_words) {
        Intent::TopBottlenecks
    } else if has(health_words) {
        Intent::Health
    } else {
        Intent::Help
    }
}

fn id_in(question: &str) -> Option<i64> {
    id_pattern()
        .captures(question)
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().parse().ok())
}

/// One stored value an answer cites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// e.g. `mean_ms`.
    pub name: String,
    /// Exactly as printed in the answer.
    pub value: String,
    /// Where it was read, e.g. `optidb.query_metrics.mean_ms (refreshed 2026-11-25 03:00:00+00)`.
    pub source: String,
}

impl Fact {
    pub fn new(name: &str, value: impl Into<String>, source: &str) -> Self {
        Fact {
            name: name.to_string(),
            value: value.into(),
            source: source.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub intent: String,
    pub text: String,
    pub facts: Vec<Fact>,
}

/// Said when every sentence was dropped: no facts, no claims.
pub const NOTHING_KNOWN: &str = "I have no stored facts to answer this.";

/// Composes an answer sentence by sentence from facts.
#[derive(Debug, Clone)]
pub struct AnswerBuilder {
    intent: String,
    /// Each sentence with the facts it names.
    sentences: Vec<(String, Vec<Fact>)>,
}

impl AnswerBuilder {
    pub fn new(intent: &str) -> Self {
        AnswerBuilder {
            intent: intent.to_string(),
            sentences: Vec::new(),
        }
    }

    /// Adds `template` with each `{name}` replaced by the value of the fact of that name. When
    /// a named fact is missing the whole sentence is dropped: nothing un-grounded is said.
    /// Only the facts the sentence names are kept.
    pub fn say(&mut self, template: &str, facts: Vec<Fact>) {
        let mut used: Vec<Fact> = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while let Some((before, name, after)) = next_placeholder(rest) {
            let Some(fact) = facts.iter().find(|f| f.name == name) else {
                return;
            };
            text.push_str(before);
            text.push_str(&fact.value);
            if !used.contains(fact) {
                used.push(fact.clone());
            }
            rest = after;
        }
        text.push_str(rest);
        self.sentences.push((text, used));
    }

    /// "I have no stored facts about {what}." — for what the SQL side found nothing on.
    pub fn unknown(&mut self, what: &str) {
        let text = format!("I have no stored facts about {}.", what.trim());
        self.sentences.push((text, Vec::new()));
    }

    /// The answer, citing the facts of the sentences said. A sentence holding a number no
    /// cited fact carries (a literal in a template, a number in an `unknown` subject) is
    /// dropped; dropping one can orphan another's number, hence the loop.
    pub fn finish(self) -> Answer {
        let mut kept = self.sentences;
        loop {
            let facts = cited(&kept);
            let before = kept.len();
            kept.retain(|(text, _)| ungrounded_in(text, &facts).is_empty());
            if kept.len() == before {
                let text = if kept.is_empty() {
                    NOTHING_KNOWN.to_string()
                } else {
                    kept.iter()
                        .map(|(t, _)| t.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                return Answer {
                    intent: self.intent,
                    text,
                    facts,
                };
            }
        }
    }
}

/// The facts of `sentences`, each once, in order of first use.
fn cited(sentences: &[(String, Vec<Fact>)]) -> Vec<Fact> {
    let mut facts: Vec<Fact> = Vec::new();
    for fact in sentences.iter().flat_map(|(_, f)| f) {
        if !facts.contains(fact) {
            facts.push(fact.clone());
        }
    }
    facts
}

/// Splits `text` at its first `{name}` placeholder (name of letters, digits, `_`).
fn next_placeholder(text: &str) -> Option<(&str, &str, &str)> {
    let mut from = 0;
    while let Some(open) = text[from..].find('{').map(|i| i + from) {
        let tail = &text[open + 1..];
        if let Some(close) = tail.find('}') {
            let name = &tail[..close];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if valid {
                return Some((&text[..open], name, &tail[close + 1..]));
            }
        }
        from = open + 1;
    }
    None
}

/// Number tokens of `answer.text` that no fact value contains as a number token.
pub fn ungrounded_numbers(answer: &Answer) -> Vec<String> {
    ungrounded_in(&answer.text, &answer.facts)
}

fn ungrounded_in(text: &str, facts: &[Fact]) -> Vec<String> {
    let grounded: Vec<String> = facts.iter().flat_map(|f| number_tokens(&f.value)).collect();
    number_tokens(text)
        .into_iter()
        .filter(|n| !grounded.contains(n))
        .collect()
}

/// Numbers as written: `42`, `-3.5`, `1,234.56`, `12` in `12ms` or `12%`. Digits inside a
/// word (`p95`, `v2`) are names, not numbers; a `-` right after a digit is a separator
/// (`2026-11-25` is 2026, 11, 25).
pub fn number_tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let in_word = prev.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == '.');
        let digit_at = |k: usize| chars.get(k).is_some_and(char::is_ascii_digit);
        let signed = chars[i] == '-' && digit_at(i + 1) && prev != Some('-');
        if in_word || !(digit_at(i) || signed) {
            i += 1;
            continue;
        }
        let end = number_end(&chars, if signed { i + 1 } else { i });
        tokens.push(chars[i..end].iter().collect());
        i = end;
    }
    tokens
}

/// End of the number whose digits start at `start`: digits, `,ddd` groups, one `.ddd` part.
fn number_end(chars: &[char], start: usize) -> usize {
    let digit_at = |k: usize| chars.get(k).is_some_and(char::is_ascii_digit);
    let mut end = start;
    while digit_at(end) {
        end += 1;
    }
    // Thousands groups only after 1 to 3 leading digits, exactly 3 digits each.
    if end - start <= 3 {
        while chars.get(end) == Some(&',')
            && (1..=3).all(|k| digit_at(end + k))
            && !digit_at(end + 4)
        {
            end += 4;
        }
    }
    if chars.get(end) == Some(&'.') && digit_at(end + 1) {
        end += 1;
        while digit_at(end) {
            end += 1;
        }
    }
    end
}

/// What to say when the question was not understood: the questions that can be answered,
/// with an example each (no numbers: nothing here is a fact).
pub fn help_text() -> String {
    [
        "I did not understand the question. I can answer these:",
        "- Why is a query slow? e.g. \"why is this query slow?\" (pass its query id)",
        "- What index should I add? e.g. \"what index should I add for this query?\"",
        "- What is the impact of a suggested index? e.g. \"show impact\"",
        "- What changed? e.g. \"what changed for this query?\"",
        "- What are the top bottlenecks? e.g. \"show the top bottlenecks\"",
        "- Is the database healthy? e.g. \"is the database healthy?\"",
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_intent_in_many_phrasings() {
        let cases: &[(&str, Intent)] = &[
            ("why is query 42 slow?", Intent::WhySlow(Some(42))),
            ("Why is query #42 so SLOW", Intent::WhySlow(Some(42))),
            ("#7 is slower than usual", Intent::WhySlow(Some(7))),
            (
                "why is statement 12 taking so long?",
                Intent::WhySlow(Some(12)),
            ),
            ("why?", Intent::WhySlow(None)),
            ("what index should I add?", Intent::WhatIndex(None)),
            (
                "Which indexes would help id 99?",
                Intent::WhatIndex(Some(99)),
            ),
            (
                "what should I create for query -5?",
                Intent::WhatIndex(Some(-5)),
            ),
            ("any index recommendations", Intent::WhatIndex(None)),
            ("show impact", Intent::ShowImpact(None)),
            (
                "what's the gain of the index on query 3",
                Intent::ShowImpact(Some(3)),
            ),
            ("simulate it", Intent::ShowImpact(None)),
            ("how much would it benefit?", Intent::ShowImpact(None)),
            ("what changed?", Intent::WhatChanged(None)),
            ("did query 8 regress?", Intent::WhatChanged(Some(8))),
            ("why is the plan different now", Intent::WhatChanged(None)),
            (
                "Has anything CHANGED since yesterday",
                Intent::WhatChanged(None),
            ),
            ("top bottlenecks", Intent::TopBottlenecks),
            ("what are the slowest queries?", Intent::TopBottlenecks),
            ("show me the worst statements", Intent::TopBottlenecks),
            ("top 10 please", Intent::TopBottlenecks),
            ("which queries are slow?", Intent::TopBottlenecks),
            ("is the database healthy?", Intent::Health),
            ("health", Intent::Health),
            ("status", Intent::Health),
            ("are we ok?", Intent::Health),
        ];
        for (question, expected) in cases {
            assert_eq!(&parse(question, None), expected, "{question}");
        }
    }

    #[test]
    fn anything_else_is_help() {
        for question in [
            "hello",
            "drop table x",
            "create table t (a int)",
            "",
            "   ",
            "thanks!",
            "what time is it",
            "tell me a joke",
            "42",
        ] {
            assert_eq!(parse(question, None), Intent::Help, "{question:?}");
        }
    }

    #[test]
    fn the_argument_id_wins_over_the_text() {
        assert_eq!(
            parse("why is query 42 slow", Some(7)),
            Intent::WhySlow(Some(7))
        );
        assert_eq!(parse("why is it slow", Some(7)), Intent::WhySlow(Some(7)));
        assert_eq!(
            parse("what index for query 5", None),
            Intent::WhatIndex(Some(5))
        );
        // Numbers without an id keyword are not ids.
        assert_eq!(parse("why are 3 queries slow", None), Intent::WhySlow(None));
        assert_eq!(parse("show impact of query 9", None).query_id(), Some(9));
        assert_eq!(Intent::TopBottlenecks.name(), "top_bottlenecks");
    }

    fn metrics() -> Vec<Fact> {
        vec![
            Fact::new("query_id", "42", "optidb.query_metrics.query_id"),
            Fact::new(
                "mean_ms",
                "12.5",
                "optidb.query_metrics.mean_ms (refreshed 2026-11-25 03:00:00+00)",
            ),
            Fact::new("calls", "1,234", "optidb.query_metrics.calls"),
        ]
    }

    /// A why_slow answer: each template said over `metrics()`, then one unknown subject.
    fn why_slow(templates: &[&str], unknown: &str) -> Answer {
        let mut b = AnswerBuilder::new("why_slow");
        for template in templates {
            b.say(template, metrics());
        }
        b.unknown(unknown);
        b.finish()
    }

    #[test]
    fn builder_fills_templates_and_drops_sentences_missing_a_fact() {
        let answer = why_slow(
            &[
                "Query {query_id} averages {mean_ms} ms over {calls} calls.",
                "It reads {rows_read} rows per call.",
            ],
            "its plan",
        );
        assert_eq!(
            answer.text,
            "Query 42 averages 12.5 ms over 1,234 calls. I have no stored facts about its plan."
        );
        assert_eq!(answer.intent, "why_slow");
        assert_eq!(answer.facts, metrics());
        assert!(ungrounded_numbers(&answer).is_empty());
    }

    #[test]
    fn only_named_facts_are_kept_and_braces_stay_literal() {
        let mut b = AnswerBuilder::new("health");
        b.say("Mean {mean_ms} ms {not a placeholder} {}.", metrics());
        let answer = b.finish();
        assert_eq!(answer.text, "Mean 12.5 ms {not a placeholder} {}.");
        assert_eq!(answer.facts.len(), 1);
        assert_eq!(answer.facts[0].name, "mean_ms");
    }

    #[test]
    fn invented_numbers_are_found_and_never_said() {
        let invented = Answer {
            intent: "why_slow".into(),
            text: "Query 42 averages 12.5 ms, 3 times more than 1,234 others.".into(),
            facts: metrics(),
        };
        assert_eq!(ungrounded_numbers(&invented), vec!["3".to_string()]);
        // The builder drops a sentence whose template carries its own number.
        let answer = why_slow(&["Query {query_id} got 3 times slower."], "query 77");
        assert_eq!(answer.text, NOTHING_KNOWN);
        assert!(
            answer.facts.is_empty(),
            "facts of dropped sentences are not cited"
        );
        // ... unless a fact grounds it.
        let answer = why_slow(&["Query {query_id} is slow."], "query 42's plan");
        assert_eq!(
            answer.text,
            "Query 42 is slow. I have no stored facts about query 42's plan."
        );
        assert!(ungrounded_numbers(&answer).is_empty());
    }

    #[test]
    fn number_formats_are_detected() {
        let tokens = number_tokens(
            "took 12.5 ms, -3 change, 1,234 calls, 45% p95 v2 12ms 2026-11-25 1,2 x1 0.001.",
        );
        assert_eq!(
            tokens,
            vec!["12.5", "-3", "1,234", "45", "12", "2026", "11", "25", "1", "2", "0.001"]
        );
        assert_eq!(
            number_tokens("1,234,567.89 and 12345,678"),
            vec!["1,234,567.89", "12345", "678"]
        );
        // Exactly as printed: 12.50 is not 12.5.
        let answer = Answer {
            intent: "x".into(),
            text: "mean 12.50".into(),
            facts: metrics(),
        };
        assert_eq!(ungrounded_numbers(&answer), vec!["12.50".to_string()]);
    }

    #[test]
    fn help_lists_all_six_questions_without_numbers() {
        let help = help_text();
        assert!(help.contains("did not understand"));
        for topic in [
            "slow",
            "index",
            "impact",
            "changed",
            "bottlenecks",
            "healthy",
        ] {
            assert!(help.contains(topic), "{topic}");
        }
        assert_eq!(help.lines().filter(|l| l.starts_with("- ")).count(), 6);
        assert!(number_tokens(&help).is_empty());
        // Every example in the help is recognised as the question it illustrates.
        let examples: Vec<&str> = help
            .lines()
            .skip(1)
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        let intents: Vec<&str> = examples.iter().map(|e| parse(e, Some(1)).name()).collect();
        assert_eq!(
            intents,
            vec![
                "why_slow",
                "what_index",
                "show_impact",
                "what_changed",
                "top_bottlenecks",
                "health"
            ]
        );
    }
}
