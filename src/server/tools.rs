//! Tools in API requests: the functions offered and the choice among them
//! (OpenAI's `tools`/`tool_choice`, Anthropic's `tools`/`tool_choice`,
//! Ollama's `tools`), checked, and turned into what the engine takes: the
//! tools for the chat template, and for a forced call a constraint that makes
//! the model write exactly one valid call.

use super::ApiError;
use crate::chat::params::{GenerateParams, OutputConstraint};
use crate::chat::template::TemplateOptions;
use crate::chat::tool_prompt::ToolSpec;
use serde_json::Value;

/// The most tools one request may offer (each is described in the prompt).
const MAX_TOOLS: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No calls: the tools are not offered.
    None,
    /// One call of any offered tool.
    Required,
    /// One call of this tool.
    Function(String),
}

pub struct ToolRequest {
    pub tools: Vec<ToolSpec>,
    pub choice: ToolChoice,
}

impl ToolRequest {
    /// Tools as OpenAI and Ollama clients send them (`{"type": "function",
    /// "function": {…}}`); a missing choice is `Auto`.
    pub fn new(tools: Option<&Value>, choice: ToolChoice) -> Result<Self, ApiError> {
        let tools = match tools {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(list)) => list.iter().map(|t| ToolSpec::from_value(t).map_err(ApiError::bad_request)).collect::<Result<_, _>>()?,
            Some(_) => return Err(ApiError::bad_request("tools must be a list")),
        };
        Self::from_specs(tools, choice)
    }

    pub fn from_specs(tools: Vec<ToolSpec>, choice: ToolChoice) -> Result<Self, ApiError> {
        if tools.len() > MAX_TOOLS {
            return Err(ApiError::bad_request(format!("at most {MAX_TOOLS} tools per request")));
        }
        for (i, t) in tools.iter().enumerate() {
            if tools[..i].iter().any(|o| o.name == t.name) {
                return Err(ApiError::bad_request(format!("two tools are named '{}'", t.name)));
            }
        }
        match &choice {
            ToolChoice::Required if tools.is_empty() => return Err(ApiError::bad_request("tool_choice requires a tool call but no tools were given")),
            ToolChoice::Function(name) if !tools.iter().any(|t| &t.name == name) => {
                return Err(ApiError::bad_request(format!("tool_choice names '{name}', which is not among the tools")))
            }
            _ => {}
        }
        Ok(ToolRequest { tools, choice })
    }

    /// OpenAI's `tool_choice`: "auto", "none", "required", or
    /// `{"type": "function", "function": {"name": …}}`.
    pub fn openai_choice(v: Option<&Value>) -> Result<ToolChoice, ApiError> {
        match v {
            None | Some(Value::Null) => Ok(ToolChoice::Auto),
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Ok(ToolChoice::Auto),
                "none" => Ok(ToolChoice::None),
                "required" => Ok(ToolChoice::Required),
                other => Err(ApiError::bad_request(format!("tool_choice '{other}' is not auto, none or required"))),
            },
            Some(o) => match o["function"]["name"].as_str() {
                Some(name) if o["type"] == "function" => Ok(ToolChoice::Function(name.to_string())),
                _ => Err(ApiError::bad_request("tool_choice must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\": …}}")),
            },
        }
    }

    /// The tools go to the template; a forced choice becomes the reply's
    /// constraint (which a JSON `response_format` would contradict).
    pub fn apply(&self, options: &mut TemplateOptions, params: &mut GenerateParams) -> Result<(), ApiError> {
        if self.tools.is_empty() || self.choice == ToolChoice::None {
            return Ok(());
        }
        options.tools = Some(self.tools.clone());
        let forced = match &self.choice {
            ToolChoice::Required => self.tools.clone(),
            ToolChoice::Function(name) => self.tools.iter().filter(|t| &t.name == name).cloned().collect(),
            ToolChoice::Auto | ToolChoice::None => return Ok(()),
        };
        if params.constraint.is_some() {
            return Err(ApiError::bad_request("a forced tool call and a JSON response_format cannot be combined"));
        }
        params.constraint = Some(OutputConstraint::ToolCall(forced));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}])
    }

    #[test]
    fn choices_are_checked_against_the_tools() {
        let named = ToolRequest::openai_choice(Some(&json!({"type": "function", "function": {"name": "get_weather"}}))).unwrap();
        let r = ToolRequest::new(Some(&weather()), named).unwrap();
        let (mut o, mut p) = (TemplateOptions::default(), GenerateParams::default());
        r.apply(&mut o, &mut p).unwrap();
        assert_eq!(o.tools.as_ref().map(Vec::len), Some(1));
        assert!(matches!(&p.constraint, Some(OutputConstraint::ToolCall(t)) if t[0].name == "get_weather"));
        // A JSON response_format and a forced call contradict each other.
        let mut p = GenerateParams { constraint: Some(OutputConstraint::JsonObject), ..Default::default() };
        assert!(r.apply(&mut TemplateOptions::default(), &mut p).unwrap_err().message.contains("cannot be combined"));

        let e = |tools: Option<&Value>, c: ToolChoice| ToolRequest::new(tools, c).err().map(|e| e.message).unwrap_or_default();
        assert!(e(Some(&weather()), ToolChoice::Function("rm".into())).contains("'rm', which is not among the tools"));
        assert!(e(None, ToolChoice::Required).contains("no tools were given"));
        let twice = json!([weather()[0], weather()[0]]);
        assert!(e(Some(&twice), ToolChoice::Auto).contains("two tools are named 'get_weather'"));
        let bad_name = json!([{"type": "function", "function": {"name": "../x"}}]);
        assert!(e(Some(&bad_name), ToolChoice::Auto).contains("must be 1 to 64 letters"));
        assert!(ToolRequest::openai_choice(Some(&json!("sometimes"))).is_err());

        // "none": nothing offered, so the engine reads no calls (it reads them
        // only when the template options carry tools).
        let none = ToolRequest::new(Some(&weather()), ToolChoice::None).unwrap();
        let mut o = TemplateOptions::default();
        none.apply(&mut o, &mut GenerateParams::default()).unwrap();
        assert!(o.tools.is_none());
    }
}
