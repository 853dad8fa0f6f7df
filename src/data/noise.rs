//! The paper's text noise, at rate p: each character (`char_noise`) or word (`word_noise`) is,
//! with probability p, substituted, swapped with the next one, deleted, or preceded by an
//! injected digit string (1 to 4 digits), the four equally likely. At p = 0 the text comes back
//! unchanged; every other character or word, and all whitespace between words, is kept.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

fn digits(rng: &mut ChaCha8Rng) -> String {
    let n = rng.random_range(1..=4);
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// Character noise at rate `p`.
pub fn char_noise(text: &str, p: f64, rng: &mut ChaCha8Rng) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !rng.random_bool(p) {
            out.push(c);
            i += 1;
            continue;
        }
        match rng.random_range(0..4) {
            0 => {
                // A different letter.
                let mut s = c;
                while s == c {
                    s = char::from(LETTERS[rng.random_range(0..LETTERS.len())]);
                }
                out.push(s);
            }
            1 if i + 1 < chars.len() => {
                out.push(chars[i + 1]);
                out.push(c);
                i += 1;
            }
            1 => out.push(c),
            2 => {}
            _ => {
                out.push_str(&digits(rng));
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

/// Word noise at rate `p`; substitutes are drawn from `pool` (the held-out text's words).
pub fn word_noise(text: &str, p: f64, pool: &[String], rng: &mut ChaCha8Rng) -> String {
    // Alternating words and the whitespace after each, so whitespace survives.
    let mut words: Vec<(&str, &str)> = Vec::new();
    let mut rest = text;
    let lead = rest.len() - rest.trim_start().len();
    let (leading, body) = rest.split_at(lead);
    rest = body;
    while !rest.is_empty() {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        let space = after.len() - after.trim_start().len();
        words.push((word, &after[..space]));
        rest = &after[space..];
    }
    let mut out = String::from(leading);
    let mut i = 0;
    while i < words.len() {
        let (word, space) = words[i];
        if !rng.random_bool(p) {
            out.push_str(word);
            out.push_str(space);
            i += 1;
            continue;
        }
        match rng.random_range(0..4) {
            0 => {
                let substitute = if pool.is_empty() {
                    word
                } else {
                    pool[rng.random_range(0..pool.len())].as_str()
                };
                out.push_str(substitute);
                out.push_str(space);
            }
            1 if i + 1 < words.len() => {
                out.push_str(words[i + 1].0);
                out.push_str(space);
                out.push_str(word);
                out.push_str(words[i + 1].1);
                i += 1;
            }
            1 => {
                out.push_str(word);
                out.push_str(space);
            }
            2 => {}
            _ => {
                out.push_str(&digits(rng));
                out.push(' ');
                out.push_str(word);
                out.push_str(space);
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const TEXT: &str =
        "the quick brown fox jumps over the lazy dog\n  and runs far away\tfrom here ";

    #[test]
    fn rate_zero_changes_nothing() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(char_noise(TEXT, 0.0, &mut rng), TEXT);
        let pool = vec!["cat".to_string()];
        assert_eq!(word_noise(TEXT, 0.0, &pool, &mut rng), TEXT);
    }

    #[test]
    fn rate_one_changes_every_unit() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let noisy = char_noise(TEXT, 1.0, &mut rng);
        assert_ne!(noisy, TEXT);
        let pool = vec!["cat".to_string()];
        let noisy = word_noise(TEXT, 1.0, &pool, &mut rng);
        assert_ne!(noisy, TEXT);
    }
}
