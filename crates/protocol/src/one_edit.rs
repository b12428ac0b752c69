//! Test support: the texts one edit away from a frame, to check that a hand-written fast path
//! reads every near-miss of an ordinary frame as the general path does (or leaves it to that
//! path). A deterministic, exhaustive neighbourhood rather than random fuzzing, so a failure
//! names its input and the tests stay fast.

/// Characters inserted or substituted: JSON's structural characters, the starts of its
/// literals and numbers, an escape, and a character outside ASCII.
const ALPHABET: &[char] = &[
    '"', '\\', '{', '}', '[', ']', ',', ':', ' ', '0', '9', '-', '.', 'e', 'n', 't', 'u', 'x',
    '\u{e9}',
];

/// Every text one edit away from `seed`: each character deleted, replaced by each character of
/// [`ALPHABET`], or preceded by one (and each appended at the end).
pub(crate) fn one_edit_away(seed: &str) -> Vec<String> {
    let chars: Vec<char> = seed.chars().collect();
    let with = |before: &[char], middle: Option<char>, after: &[char]| -> String {
        before
            .iter()
            .copied()
            .chain(middle)
            .chain(after.iter().copied())
            .collect()
    };
    let mut texts = Vec::new();
    for i in 0..=chars.len() {
        let (before, rest) = chars.split_at(i);
        if let Some((_, after)) = rest.split_first() {
            texts.push(with(before, None, after));
            for &c in ALPHABET {
                texts.push(with(before, Some(c), after));
            }
        }
        for &c in ALPHABET {
            texts.push(with(before, Some(c), rest));
        }
    }
    texts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_cover_deletions_substitutions_and_insertions() {
        let texts = one_edit_away("ab");
        assert_eq!(texts.len(), 2 * (1 + 2 * ALPHABET.len()) + ALPHABET.len());
        for expected in ["b", "a", "\"b", "a\"", "\"ab", "a\"b", "ab\""] {
            assert!(texts.iter().any(|t| t == expected), "{expected}");
        }
    }
}
