//! The GGUF's own chat template (`tokenizer.chat_template`, Hugging Face Jinja), rendered with
//! minijinja the way `transformers` renders it: `trim_blocks`, `lstrip_blocks`, Python string
//! methods (`.strip()`, `.startswith()` …) and `raise_exception`.

use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};

use crate::LlmError;

/// One message of a conversation (the OpenAI shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message of `role`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// ChatML, for a GGUF without a template.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compile `source` (or ChatML when `None`); `bos`/`eos` are the token strings the template
    /// may reference.
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<Self, LlmError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| LlmError::Template(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat", source.unwrap_or(CHATML).to_string())
            .map_err(|e| LlmError::Template(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// The prompt text for `messages`, ending with the assistant's turn opener when
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, LlmError> {
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| LlmError::Template(e.to_string()))?;
        t.render(context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(|e| LlmError::Template(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_renders_turns_and_generation_prompt() {
        let t = ChatTemplate::new(None, "", "").unwrap();
        let s = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn raise_exception_and_python_methods_work() {
        let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0]['content'].strip() }}";
        let t = ChatTemplate::new(Some(src), "", "").unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "  hi  ")], false).unwrap(),
            "hi"
        );
        let e = t.render(&[Message::new("system", "x")], false).unwrap_err();
        assert!(e.to_string().contains("first must be user"), "{e}");
    }
}
