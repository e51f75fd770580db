//! Stop strings over streamed text: text that might be the start of a stop string is held back
//! until it is known not to be one, so a stop string never reaches the caller.

/// Text received so far, what has been released, and the stop strings to look for.
#[derive(Debug)]
pub(crate) struct StopFilter {
    stops: Vec<String>,
    text: String,
    released: usize,
}

/// What a new piece of text did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Text that is safe to show (possibly empty).
    Release(String),
    /// A stop string appeared: the text before it (not yet released) is the last to show.
    Stop(String),
}

impl StopFilter {
    pub(crate) fn new(stops: &[String]) -> StopFilter {
        StopFilter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            text: String::new(),
            released: 0,
        }
    }

    /// Adds `piece` (valid UTF-8).
    pub(crate) fn push(&mut self, piece: &str) -> Step {
        // A stop string can start at most (longest stop - 1) bytes before the new text.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.text.len().saturating_sub(longest.saturating_sub(1));
        self.text.push_str(piece);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|p| from + p))
            .min();
        if let Some(at) = hit {
            let out = self.text[self.released.min(at)..at].to_string();
            self.text.truncate(at);
            self.released = at;
            return Step::Stop(out);
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let held = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len())
                    .rev()
                    .find(|&n| s.is_char_boundary(n) && self.text.ends_with(&s[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let safe = (self.text.len() - held).max(self.released);
        let out = self.text[self.released..safe].to_string();
        self.released = safe;
        Step::Release(out)
    }

    /// The text held back at the end (no stop string came).
    pub(crate) fn finish(&mut self) -> String {
        let out = self.text[self.released..].to_string();
        self.released = self.text.len();
        out
    }

    /// All text so far, stop string excluded.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut out = Vec::new();
        for p in pieces {
            match f.push(p) {
                Step::Release(s) => out.push(s),
                Step::Stop(s) => {
                    out.push(s);
                    return (out, true, f.text().to_string());
                }
            }
        }
        out.push(f.finish());
        (out, false, f.text().to_string())
    }

    #[test]
    fn a_stop_string_split_across_pieces_is_never_shown() {
        let (out, stopped, text) = run(&["\nUser:"], &["Hello", "\nUs", "er:", " more"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Hello");
        assert_eq!(text, "Hello");
        assert_eq!(
            out[1], "",
            "the possible start of the stop string is held back"
        );
    }

    #[test]
    fn held_text_is_released_when_it_is_not_a_stop() {
        let (out, stopped, _) = run(&["###"], &["a#", "#b", "c"]);
        assert!(!stopped);
        assert_eq!(out, ["a", "##b", "c", ""]);
        let (out, _, _) = run(&["END"], &["the EN"]);
        assert_eq!(out, ["the ", "EN"], "finish releases what was held");
    }

    #[test]
    fn multibyte_text_and_earliest_stop() {
        let (out, stopped, _) = run(&["🛑", "stop"], &["日本語 sto", "p 🛑"]);
        assert!(stopped);
        assert_eq!(out.concat(), "日本語 ");
        let (out, stopped, _) = run(&[], &["x", "y"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "xy");
    }
}
