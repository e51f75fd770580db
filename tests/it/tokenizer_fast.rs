//! The WordPiece fast path for ASCII text (`runtime/src/tokenizer/fast_wordpiece.rs`) against
//! the `tokenizers` crate, on MiniLM's and llama.cpp's MiniLM tokenizers: every fixture text
//! and generated texts (mixed case, digits, punctuation, whitespace runs, unknown and
//! over-long words, texts holding special tokens), with and without truncation.

use edgecut::{GgufFile, WeightType};
use edgecut_format::Tokenizer;
use edgecut_tests::{fixture, minilm, repo_root};

/// A small deterministic generator (tests must not depend on a seed source).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

fn text(rng: &mut Lcg) -> String {
    #[rustfmt::skip]
    const WORDS: &[&str] = &[
        "hello", "Hello", "WORLD", "the", "unbelievable", "tokenization", "x", "42", "3.14",
        "don't", "e-mail", "[MASK", "##ing", "zzqxj", "Qwerty123", "a.b.c", "...", "$", "#",
        "@user", "~tilde~", "`tick`", "{}", "\\", "\"quoted\"",
    ];
    // Texts the fast path leaves to `tokenizers`: special tokens and non-ASCII.
    const RARE: &[&str] = &["[CLS]", "[sep]", "naïve", "日本", "\u{7f}"];
    let mut s = String::new();
    for _ in 0..rng.next(40) {
        match rng.next(200) {
            0 => s.push_str(RARE[rng.next(RARE.len())]),
            1..=10 => s.push_str(&"ab".repeat(30 + rng.next(40))), // sometimes over 100 chars
            11..=30 => s.push(char::from(0x20 + rng.next(95) as u8)),
            31..=40 => s.push_str(["\t", "\n", "\r\n", "   "][rng.next(4)]),
            _ => s.push_str(WORDS[rng.next(WORDS.len())]),
        }
        if rng.next(3) > 0 {
            s.push(' ');
        }
    }
    s
}

fn check(tok: &Tokenizer, label: &str) {
    let fx = fixture("minilm.json");
    let mut texts: Vec<String> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let mut rng = Lcg(7);
    texts.extend((0..3000).map(|_| text(&mut rng)));
    texts.extend([
        "".to_string(),
        " ".to_string(),
        "a".repeat(100),
        "a".repeat(101),
    ]);
    let mut fast = 0;
    for t in &texts {
        fast += tok.takes_fast_path(t) as usize;
        for max_len in [None, Some(8), Some(2)] {
            for special in [true, false] {
                assert_eq!(
                    tok.encode(t, special, max_len).unwrap(),
                    tok.encode_reference(t, special, max_len).unwrap(),
                    "{label}: {t:?} (special {special}, max_len {max_len:?})"
                );
            }
        }
    }
    println!(
        "{label}: {} texts, {fast} through the fast path",
        texts.len()
    );
    // The comparison must exercise the fast path, and leave it for texts it cannot take.
    assert!(
        fast > texts.len() / 2,
        "{label}: fast path taken {fast} times"
    );
    assert!(tok.takes_fast_path("A plain ASCII sentence, with punctuation!"));
    assert!(!tok.takes_fast_path("naïve"));
    assert!(!tok.takes_fast_path("a [CLS] token"));
}

#[test]
fn wordpiece_fast_path_matches_tokenizers() {
    let f = GgufFile::open(minilm(WeightType::Q8_0)).unwrap();
    check(&Tokenizer::from_gguf(&f).unwrap(), "MiniLM tokenizer.json");
    let path = repo_root().join("tests/fixtures/llama-cpp/all-MiniLM-L6-v2.q8_0.gguf");
    let f = GgufFile::open(path).unwrap();
    check(
        &Tokenizer::from_gguf(&f).unwrap(),
        "llama.cpp's tokenizer.ggml",
    );
}
