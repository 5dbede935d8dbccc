//! Tokenisation with the model's own `tokenizer.json` (Hugging Face `tokenizers`):
//! truncation at [`MAX_SEQ_LEN`] tokens counting `[CLS]`/`[SEP]`, no padding (we pad per
//! batch, to the batch's longest input).

use super::{MAX_SEQ_LEN, ModelError};
use tokenizers::{Tokenizer, TruncationParams};

/// Words kept before tokenising. Every kept word yields at least one token, so clipping at
/// this many words never changes the first [`MAX_SEQ_LEN`] tokens — but it bounds the work a
/// 10 MB line can cause.
const MAX_WORDS: usize = MAX_SEQ_LEN + 64;

/// The model's WordPiece tokenizer, set to truncate at [`MAX_SEQ_LEN`] and never pad.
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    /// Load a Hugging Face `tokenizer.json` (the verified bytes of the weights bundle).
    pub fn from_json(json: &[u8]) -> Result<Self, ModelError> {
        let mut inner =
            Tokenizer::from_bytes(json).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: MAX_SEQ_LEN,
                ..Default::default()
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Token ids of one text, `[CLS] … [SEP]`, at most [`MAX_SEQ_LEN`] long.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .inner
            .encode(clip_words(text, MAX_WORDS), true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }
}

/// The prefix of `text` that ends before the whitespace following its `max_words`-th word.
/// Only words with an alphanumeric or ASCII punctuation character count: those always
/// produce a token (control and format characters may be dropped by the normaliser).
pub fn clip_words(text: &str, max_words: usize) -> &str {
    let mut words = 0;
    let mut in_word = false;
    let mut counts = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word && counts {
                words += 1;
                if words >= max_words {
                    return &text[..i];
                }
            }
            in_word = false;
            counts = false;
        } else {
            in_word = true;
            counts |= c.is_alphanumeric() || c.is_ascii_punctuation();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::clip_words;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_at_a_word_boundary() {
        assert_eq!(clip_words("a b c", 5), "a b c");
        assert_eq!(clip_words("a b c d", 2), "a b");
        assert_eq!(clip_words("  a \u{1} \u{1} b  c", 2), "  a \u{1} \u{1} b");
        let long = "word ".repeat(100_000);
        assert_eq!(clip_words(&long, 300).split_whitespace().count(), 300);
    }
}
