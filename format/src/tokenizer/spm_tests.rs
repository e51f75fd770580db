//! The SentencePiece tokenizer on tiny hand-built vocabularies: each test pins one rule of
//! llama.cpp's algorithm (merge order, ties, byte fallback, special-token cuts, decoding).

use super::*;
use crate::tokenizer::{Imp, TextStream, Tokenizer};

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER: i32 = 4;
const BYTE: i32 = 6;

/// A vocabulary of (piece, score, type); ids are positions.
fn vocab(entries: &[(&str, f32, i32)], settings: Settings) -> Spm {
    let pieces: Vec<String> = entries.iter().map(|e| e.0.to_string()).collect();
    let scores: Vec<f32> = entries.iter().map(|e| e.1).collect();
    let types: Vec<i32> = entries.iter().map(|e| e.2).collect();
    Spm::new(&pieces, Some(&scores), Some(&types), settings).unwrap()
}

fn plain() -> Settings {
    Settings::default()
}

/// Letters a..e, the space marker, and whatever `extra` adds (ids from 6 on).
fn letters(extra: &[(&str, f32, i32)], settings: Settings) -> Spm {
    let mut e = vec![
        ("a", 0.0, NORMAL),
        ("b", 0.0, NORMAL),
        ("c", 0.0, NORMAL),
        ("d", 0.0, NORMAL),
        ("e", 0.0, NORMAL),
        ("\u{2581}", 0.0, NORMAL),
    ];
    e.extend_from_slice(extra);
    vocab(&e, settings)
}

/// Pieces of the ids, for readable assertions.
fn pieces(t: &Spm, text: &str) -> Vec<String> {
    t.encode(text)
        .unwrap()
        .iter()
        .map(|&id| t.vocab.piece(id).to_string())
        .collect()
}

#[test]
fn the_best_scoring_pair_merges_first() {
    // "bc" outscores "ab": "abc" is a + bc, though "ab" comes first.
    let t = letters(&[("ab", -2.0, NORMAL), ("bc", -1.0, NORMAL)], plain());
    assert_eq!(pieces(&t, "abc"), ["a", "bc"]);
    let t = letters(&[("ab", -1.0, NORMAL), ("bc", -2.0, NORMAL)], plain());
    assert_eq!(pieces(&t, "abc"), ["ab", "c"]);
}

#[test]
fn equal_scores_merge_leftmost_first() {
    let t = letters(&[("bc", -1.0, NORMAL), ("ab", -1.0, NORMAL)], plain());
    assert_eq!(pieces(&t, "abc"), ["ab", "c"]);
    // "cd" and "de" tie with "ab": left to right gives ab, cd, e.
    let t = letters(
        &[
            ("de", -1.0, NORMAL),
            ("cd", -1.0, NORMAL),
            ("ab", -1.0, NORMAL),
        ],
        plain(),
    );
    assert_eq!(pieces(&t, "abcde"), ["ab", "cd", "e"]);
}

#[test]
fn merged_symbols_merge_again_and_stale_pairs_are_skipped() {
    // ab then abc then abcd; "bc" would win over "abc" if "ab" had not taken the b.
    let t = letters(
        &[
            ("ab", -1.0, NORMAL),
            ("bc", -2.0, NORMAL),
            ("abc", -3.0, NORMAL),
            ("abcd", -4.0, NORMAL),
        ],
        plain(),
    );
    assert_eq!(pieces(&t, "abcd"), ["abcd"]);
    assert_eq!(pieces(&t, "abcdbc"), ["abcd", "bc"]);
    // A pair whose concatenation is a piece never merges when a better merge eats one side.
    let t = letters(&[("bc", -1.0, NORMAL), ("ab", -5.0, NORMAL)], plain());
    assert_eq!(pieces(&t, "abcab"), ["a", "bc", "ab"]);
}

#[test]
fn spaces_become_the_marker_and_the_prefix_follows_the_setting() {
    let extra = [("\u{2581}a", -1.0, NORMAL), ("<x>", 0.0, CONTROL)];
    let t = letters(&extra, plain());
    assert_eq!(pieces(&t, "a a"), ["a", "\u{2581}a"]);
    let spaced = Settings {
        add_space_prefix: true,
        ..plain()
    };
    let t = letters(&extra, spaced);
    assert_eq!(pieces(&t, "a a"), ["\u{2581}a", "\u{2581}a"]);
    // After a special token the next text gets the prefix again.
    assert_eq!(pieces(&t, "a<x>a"), ["\u{2581}a", "<x>", "\u{2581}a"]);
    // A literal U+2581 is indistinguishable from a space, as in llama.cpp.
    assert_eq!(pieces(&t, "\u{2581}a"), ["\u{2581}", "\u{2581}a"]);
}

#[test]
fn characters_without_a_piece_fall_back_to_bytes_then_unknown() {
    let mut e: Vec<(String, f32, i32)> =
        vec![("<unk>".into(), 0.0, UNKNOWN), ("a".into(), 0.0, NORMAL)];
    for b in 0..=255u32 {
        e.push((format!("<0x{b:02X}>"), 0.0, BYTE));
    }
    let entries: Vec<(&str, f32, i32)> = e.iter().map(|(p, s, t)| (p.as_str(), *s, *t)).collect();
    let unk = Settings {
        unk: Some(0),
        ..plain()
    };
    let t = vocab(&entries, unk);
    assert_eq!(pieces(&t, "aé"), ["a", "<0xC3>", "<0xA9>"]);
    assert_eq!(pieces(&t, "\0"), ["<0x00>"]);
    // Without byte pieces: the unknown piece, once per byte (llama.cpp emits per byte).
    let t = vocab(&entries[..2], unk);
    assert_eq!(pieces(&t, "é"), ["<unk>", "<unk>"]);
    // Neither: an error, not a panic.
    let t = vocab(&entries[1..2], plain());
    assert!(t.encode("é").is_err());
}

#[test]
fn special_pieces_cut_the_text_longest_first() {
    let t = letters(
        &[
            ("<c>", 0.0, CONTROL), // 6
            ("\n", 0.0, USER),     // 7
            ("\n\n", 0.0, USER),   // 8
            ("ab", 0.0, USER),     // 9
            ("bcd", 0.0, USER),    // 10
            ("de", 0.0, USER),     // 11
            ("cd", 0.0, USER),     // 12
        ],
        plain(),
    );
    assert_eq!(pieces(&t, "\n\n\n"), ["\n\n", "\n"]);
    assert_eq!(pieces(&t, "a<c>b<c>"), ["a", "<c>", "b", "<c>"]);
    // The longer "bcd" is cut out before "ab" is looked for, though "ab" starts first.
    assert_eq!(pieces(&t, "abcd"), ["a", "bcd"]);
    // Equally long "de" and "cd" overlap in "cde": the lower id is taken first.
    assert_eq!(pieces(&t, "cde"), ["c", "de"]);
    // Occurrences are taken leftmost first within what is left.
    assert_eq!(pieces(&t, "ababa"), ["ab", "ab", "a"]);
    assert_eq!(
        t.partition("x<c"),
        [Fragment::Text(0, 3)],
        "an unfinished special token is text"
    );
    assert!(t.partition("").is_empty());
}

#[test]
fn decoding_reverses_the_markers_bytes_and_specials() {
    let mut e = vec![
        ("<bos>", 0.0, CONTROL),
        ("<unk>", 0.0, UNKNOWN),
        ("\u{2581}hi", 0.0, NORMAL),
        ("<u>", 0.0, USER),
        ("<0xC3>", 0.0, BYTE),
        ("<0xA9>", 0.0, BYTE),
        ("junk", 0.0, 5),
    ];
    e.push(("x", 0.0, NORMAL));
    let s = Settings {
        add_bos: true,
        add_space_prefix: true,
        bos: Some(0),
        unk: Some(1),
        ..plain()
    };
    let t = vocab(&e, s);
    assert_eq!(t.decode(&[2, 4, 5, 3, 6], true).unwrap(), "hié<u>");
    // The first piece loses its space prefix, unless a BOS was dropped before it.
    assert_eq!(t.decode(&[0, 2, 1], true).unwrap(), " hi");
    assert_eq!(t.decode(&[0, 2, 1], false).unwrap(), "<bos> hi<unk>");
    assert_eq!(t.decode(&[7, 2], true).unwrap(), "x hi");
    // Half a character: the replacement character, not an error.
    assert_eq!(t.decode(&[4], true).unwrap(), "\u{FFFD}");
    assert!(t.decode(&[99], true).is_err());
    assert_eq!(t.decode(&[], true).unwrap(), "");
}

#[test]
fn odd_inputs_do_not_panic_and_round_trip() {
    let mut e: Vec<(String, f32, i32)> = vec![("<unk>".into(), 0.0, UNKNOWN)];
    for b in 0..=255u32 {
        e.push((format!("<0x{b:02X}>"), 0.0, BYTE));
    }
    e.push(("\u{2581}".into(), -1.0, NORMAL));
    let entries: Vec<(&str, f32, i32)> = e.iter().map(|(p, s, t)| (p.as_str(), *s, *t)).collect();
    let t = vocab(&entries, plain());
    for text in [
        "",
        " ",
        "\0\0",
        "\u{301}\u{308}",
        "a\u{301} b",
        "\u{FEFF}\u{200D}",
        "😀 日本 \u{10FFFF}",
        "\r\n\t",
    ] {
        let ids = t.encode(text).unwrap();
        assert_eq!(t.decode(&ids, true).unwrap(), text, "{text:?}");
    }
}

#[test]
fn a_long_text_encodes_in_linear_ish_time() {
    let t = letters(
        &[
            ("ab", -1.0, NORMAL),
            ("abab", -2.0, NORMAL),
            ("\u{2581}a", -3.0, NORMAL),
        ],
        plain(),
    );
    let text = "ab ".repeat(20_000);
    let start = std::time::Instant::now();
    let ids = t.encode(&text).unwrap();
    assert_eq!(ids.len(), 40_000);
    // Quadratic merging would take minutes; this is milliseconds even in a debug build.
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
}

#[test]
fn bad_vocabularies_are_errors() {
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(Spm::new(&p(&[]), None, None, plain()).is_err());
    assert!(Spm::new(&p(&["a", "a"]), None, None, plain()).is_err());
    assert!(Spm::new(&p(&["a", "b"]), Some(&[0.0]), None, plain()).is_err());
    assert!(Spm::new(&p(&["a", "b"]), None, Some(&[1]), plain()).is_err());
    let bos = Settings {
        add_bos: true,
        bos: Some(7),
        ..plain()
    };
    assert!(
        Spm::new(&p(&["a"]), None, None, bos).is_err(),
        "BOS out of range"
    );
    // An empty piece is renamed, not matched.
    let t = Spm::new(&p(&["", "a"]), None, None, plain()).unwrap();
    assert_eq!(t.encode("a").unwrap(), [1]);
    assert_eq!(t.token_to_id("[EMPTY_0]"), Some(0));
}

fn tokenizer(spm: Spm) -> Tokenizer {
    Tokenizer {
        imp: Imp::Spm(Box::new(spm)),
        source: "test",
    }
}

#[test]
fn the_public_tokenizer_adds_bos_truncates_and_streams() {
    let mut e: Vec<(String, f32, i32)> = vec![
        ("<bos>".into(), 0.0, CONTROL),
        ("<eos>".into(), 0.0, CONTROL),
        ("a".into(), 0.0, NORMAL),
    ];
    for b in 0..=255u32 {
        e.push((format!("<0x{b:02X}>"), 0.0, BYTE));
    }
    let entries: Vec<(&str, f32, i32)> = e.iter().map(|(p, s, t)| (p.as_str(), *s, *t)).collect();
    let s = Settings {
        add_bos: true,
        add_eos: true,
        bos: Some(0),
        eos: Some(1),
        ..plain()
    };
    let tok = tokenizer(vocab(&entries, s));
    let enc = tok.encode("aaa", true, None).unwrap();
    assert_eq!(enc.ids, [0, 2, 2, 2, 1]);
    let cut = tok.encode("aaa", true, Some(3)).unwrap();
    assert_eq!((cut.ids.as_slice(), cut.full_len), (&[0, 2, 1][..], 5));
    assert!(cut.truncated());
    assert_eq!(tok.encode("aaa", false, None).unwrap().ids, [2, 2, 2]);
    assert_eq!(tok.encode_reference("aaa", true, None).unwrap(), enc);
    assert!(!tok.takes_fast_path("aaa"));
    assert_eq!(tok.decode(&enc.ids, true).unwrap(), "aaa");
    assert_eq!(tok.decode(&enc.ids, false).unwrap(), "<bos>aaa<eos>");
    assert!(tok.is_special(0) && !tok.is_special(2));
    assert_eq!(tok.token_bytes(0x41 + 3), Some(vec![0x41]));
    assert_eq!(tok.vocab_size(), 259);
    assert_eq!(tok.token_to_id("<eos>"), Some(1));

    // "é😀" is six byte pieces; the stream gives each character once it is whole.
    let ids = tok.encode("é😀a", false, None).unwrap().ids;
    assert_eq!(ids.len(), 7);
    let mut stream = TextStream::new(&tok);
    let out: Vec<String> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
    assert_eq!(out, ["", "é", "", "", "", "😀", "a"]);
    assert_eq!(stream.push(1).unwrap(), "", "EOS is left out");
    assert_eq!(stream.finish(), "");
}
