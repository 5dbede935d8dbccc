//! Retrieval-augmented prompts: the passages a search found go into the conversation as
//! numbered sources, so the answer can cite them (`[1]`). One definition, used by the CLI
//! (`shoal-node ask`) and the page ("Answer from my documents").

use crate::template::Message;

/// Most characters of one passage put into the prompt.
pub const MAX_SOURCE_CHARS: usize = 1200;

/// A retrieved passage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Where it came from, e.g. `notes/travel.md:12`.
    pub label: String,
    /// The passage.
    pub text: String,
}

/// The system instruction of a grounded answer.
pub const RAG_SYSTEM: &str = "You are a helpful assistant. Answer the question using only the numbered sources below, and cite the source you used like [1]. If the sources do not contain the answer, say that you do not know.";

/// The conversation for `question` grounded in `sources` (numbered from 1, in order).
pub fn rag_messages(question: &str, sources: &[Source]) -> Vec<Message> {
    let mut user = String::from("Sources:\n");
    for (i, s) in sources.iter().enumerate() {
        let text: String = s.text.chars().take(MAX_SOURCE_CHARS).collect();
        user.push_str(&format!("[{}] {}\n", i + 1, text.trim()));
    }
    user.push_str("\nQuestion: ");
    user.push_str(question.trim());
    vec![
        Message::new("system", RAG_SYSTEM),
        Message::new("user", user),
    ]
}

/// Source numbers (1-based) an answer cites, in order of first mention.
pub fn cited(answer: &str, n_sources: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let b = answer.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            let j = b[i + 1..]
                .iter()
                .position(|&c| c == b']')
                .map(|p| i + 1 + p);
            if let Some(j) = j {
                if let Ok(n) = answer[i + 1..j].trim().parse::<usize>()
                    && (1..=n_sources).contains(&n)
                    && !out.contains(&n)
                {
                    out.push(n);
                }
                i = j;
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_numbered_and_citations_found() {
        let m = rag_messages(
            "When?",
            &[
                Source {
                    label: "a:1".into(),
                    text: "first".into(),
                },
                Source {
                    label: "b:2".into(),
                    text: "second".into(),
                },
            ],
        );
        assert_eq!(m.len(), 2);
        assert!(
            m[1].content
                .contains("[1] first\n[2] second\n\nQuestion: When?")
        );
        assert_eq!(cited("As [2] says, and [1], [2], [9], [x]", 2), vec![2, 1]);
    }
}
