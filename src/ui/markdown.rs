//! Markdown → egui widgets, straight from pulldown-cmark events: headings,
//! emphasis, lists, block quotes, tables, inline code, fenced code blocks
//! highlighted by syntect with a Copy button, and links that open only when clicked (nothing is ever fetched).

use egui::{Color32, RichText, Ui};
use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

#[derive(Default, Clone, Copy)]
struct Style {
    strong: bool,
    emphasis: bool,
    strike: bool,
    heading: Option<HeadingLevel>,
}

enum Inline {
    Text(String, Style, bool /* code */),
    Link(String, String),
    Break,
}

pub fn show(ui: &mut Ui, text: &str, id_salt: usize) {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_STRIKETHROUGH);
    let mut style = Style::default();
    let mut inlines: Vec<Inline> = Vec::new();
    let mut list_stack: Vec<Option<u64>> = Vec::new();
    let mut quote_depth = 0usize;
    let mut code: Option<(String, String)> = None;
    let mut link: Option<(String, String)> = None;
    let mut table: Option<Vec<Vec<String>>> = None;
    let mut cell = String::new();
    let mut block_no = 0usize;

    let flush = |ui: &mut Ui, inlines: &mut Vec<Inline>, list_stack: &[Option<u64>], quote: usize| {
        if inlines.is_empty() {
            return;
        }
        let indent = 16.0 * (list_stack.len().saturating_sub(1) as f32) + 12.0 * quote as f32;
        ui.horizontal_wrapped(|ui| {
            ui.add_space(indent);
            ui.spacing_mut().item_spacing.x = 0.0;
            if quote > 0 {
                ui.label(RichText::new("| ").color(Color32::GRAY));
            }
            for i in inlines.drain(..) {
                match i {
                    Inline::Text(t, s, is_code) => {
                        let mut rt = RichText::new(t);
                        if is_code {
                            rt = rt.code();
                        }
                        if s.strong {
                            rt = rt.strong();
                        }
                        if s.emphasis {
                            rt = rt.italics();
                        }
                        if s.strike {
                            rt = rt.strikethrough();
                        }
                        if let Some(h) = s.heading {
                            let size = match h {
                                HeadingLevel::H1 => 1.6,
                                HeadingLevel::H2 => 1.4,
                                HeadingLevel::H3 => 1.2,
                                _ => 1.1,
                            };
                            let base = ui.style().text_styles[&egui::TextStyle::Body].size;
                            rt = rt.size(base * size).strong();
                        }
                        ui.label(rt);
                    }
                    Inline::Link(label, url) => {
                        // egui opens the URL only on click, through the OS browser.
                        ui.hyperlink_to(label, url).on_hover_text("Opens in your browser when clicked");
                    }
                    Inline::Break => {
                        ui.end_row();
                    }
                }
            }
        });
    };

    for ev in Parser::new_ext(text, opts) {
        match ev {
            Event::Start(Tag::Heading { level, .. }) => style.heading = Some(level),
            Event::End(TagEnd::Heading(_)) => {
                flush(ui, &mut inlines, &list_stack, quote_depth);
                style.heading = None;
            }
            Event::Start(Tag::Paragraph) => {}
            Event::End(TagEnd::Paragraph) => {
                flush(ui, &mut inlines, &list_stack, quote_depth);
                ui.add_space(4.0);
            }
            Event::Start(Tag::Strong) => style.strong = true,
            Event::End(TagEnd::Strong) => style.strong = false,
            Event::Start(Tag::Emphasis) => style.emphasis = true,
            Event::End(TagEnd::Emphasis) => style.emphasis = false,
            Event::Start(Tag::Strikethrough) => style.strike = true,
            Event::End(TagEnd::Strikethrough) => style.strike = false,
            Event::Start(Tag::BlockQuote(_)) => quote_depth += 1,
            Event::End(TagEnd::BlockQuote(_)) => {
                flush(ui, &mut inlines, &list_stack, quote_depth);
                quote_depth = quote_depth.saturating_sub(1);
            }
            Event::Start(Tag::List(start)) => {
                flush(ui, &mut inlines, &list_stack, quote_depth);
                list_stack.push(start);
            }
            Event::End(TagEnd::List(_)) => {
                flush(ui, &mut inlines, &list_stack, quote_depth);
                list_stack.pop();
            }
            Event::Start(Tag::Item) => {
                flush(ui, &mut inlines, &list_stack, quote_depth);
                let marker = match list_stack.last_mut() {
                    Some(Some(n)) => {
                        let m = format!("{n}. ");
                        *n += 1;
                        m
                    }
                    _ => "• ".to_string(),
                };
                inlines.push(Inline::Text(marker, Style::default(), false));
            }
            Event::End(TagEnd::Item) => flush(ui, &mut inlines, &list_stack, quote_depth),
            Event::Start(Tag::CodeBlock(kind)) => {
                flush(ui, &mut inlines, &list_stack, quote_depth);
                let lang = match kind {
                    CodeBlockKind::Fenced(l) => l.to_string(),
                    CodeBlockKind::Indented => String::new(),
                };
                code = Some((lang, String::new()));
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((lang, body)) = code.take() {
                    block_no += 1;
                    code_block(ui, &lang, body.trim_end_matches('\n'), (id_salt, block_no));
                }
            }
            Event::Start(Tag::Link { dest_url, .. }) => link = Some((String::new(), dest_url.to_string())),
            Event::End(TagEnd::Link) => {
                if let Some((label, url)) = link.take() {
                    inlines.push(Inline::Link(if label.is_empty() { url.clone() } else { label }, url));
                }
            }
            Event::Start(Tag::Table(_)) => {
                flush(ui, &mut inlines, &list_stack, quote_depth);
                table = Some(Vec::new());
            }
            Event::Start(Tag::TableHead) | Event::Start(Tag::TableRow) => {
                if let Some(t) = table.as_mut() {
                    t.push(Vec::new());
                }
            }
            Event::Start(Tag::TableCell) => cell.clear(),
            Event::End(TagEnd::TableCell) => {
                if let Some(row) = table.as_mut().and_then(|t| t.last_mut()) {
                    row.push(std::mem::take(&mut cell));
                }
            }
            Event::End(TagEnd::Table) => {
                if let Some(rows) = table.take() {
                    block_no += 1;
                    egui::Grid::new(("md-table", id_salt, block_no)).striped(true).show(ui, |ui| {
                        for (i, row) in rows.iter().enumerate() {
                            for c in row {
                                if i == 0 {
                                    ui.label(RichText::new(c).strong());
                                } else {
                                    ui.label(c);
                                }
                            }
                            ui.end_row();
                        }
                    });
                    ui.add_space(4.0);
                }
            }
            Event::Text(t) => {
                if let Some((_, body)) = code.as_mut() {
                    body.push_str(&t);
                } else if table.is_some() {
                    cell.push_str(&t);
                } else if let Some((label, _)) = link.as_mut() {
                    label.push_str(&t);
                } else {
                    inlines.push(Inline::Text(t.to_string(), style, false));
                }
            }
            Event::Code(t) => {
                if table.is_some() {
                    cell.push_str(&t);
                } else {
                    inlines.push(Inline::Text(t.to_string(), style, true));
                }
            }
            Event::SoftBreak => inlines.push(Inline::Text(" ".into(), style, false)),
            Event::HardBreak => inlines.push(Inline::Break),
            Event::Rule => {
                flush(ui, &mut inlines, &list_stack, quote_depth);
                ui.separator();
            }
            Event::Html(h) | Event::InlineHtml(h) => inlines.push(Inline::Text(h.to_string(), style, false)),
            _ => {}
        }
    }
    flush(ui, &mut inlines, &list_stack, quote_depth);
}

fn code_block(ui: &mut Ui, lang: &str, body: &str, id: (usize, usize)) {
    egui::Frame::new()
        .fill(ui.visuals().extreme_bg_color)
        .corner_radius(6.0)
        .inner_margin(8.0)
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                if !lang.is_empty() {
                    ui.label(RichText::new(lang).small().weak());
                }
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    if ui.small_button("Copy").on_hover_text("Copy code").clicked() {
                        ui.ctx().copy_text(body.to_string());
                    }
                });
            });
            // Highlighted by syntect (egui_extras keeps each block's layout
            // between frames: a block is highlighted again only when its text
            // changes, as the one being streamed does); a language syntect
            // does not know shows in one colour.
            let theme = egui_extras::syntax_highlighting::CodeTheme::from_style(ui.style());
            let job = egui_extras::syntax_highlighting::highlight(ui.ctx(), ui.style(), &theme, body, syntax_of(lang));
            ui.push_id(("code", id.0, id.1), |ui| {
                // Long lines scroll sideways instead of wrapping (code keeps its shape).
                egui::ScrollArea::horizontal().show(ui, |ui| {
                    ui.add(egui::Label::new(job).extend().selectable(true));
                });
            });
        });
    ui.add_space(4.0);
}

/// The name syntect finds a fence's language by (it looks names up as given,
/// then as file extensions): the usual fence words mapped to an extension.
pub fn syntax_of(fence: &str) -> &str {
    let word = fence.split_whitespace().next().unwrap_or("");
    match word.to_ascii_lowercase().as_str() {
        "rust" => "rs",
        "python" | "python3" | "py3" => "py",
        "javascript" | "node" | "jsx" | "typescript" | "ts" | "tsx" | "mjs" => "js",
        "bash" | "shell" | "zsh" | "console" | "shellscript" => "sh",
        "c++" | "cxx" => "cpp",
        "csharp" | "c#" => "cs",
        "golang" => "go",
        "yml" => "yaml",
        "ruby" => "rb",
        "markdown" => "md",
        "haskell" => "hs",
        "latex" => "tex",
        "perl" => "pl",
        "objective-c" | "objc" => "m",
        _ => word,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fence_words_map_to_names_syntect_knows() {
        use super::syntax_of;
        assert_eq!(syntax_of("rust"), "rs");
        assert_eq!(syntax_of("Rust ignore"), "rs");
        assert_eq!(syntax_of("python3"), "py");
        assert_eq!(syntax_of("bash"), "sh");
        assert_eq!(syntax_of("JSON"), "JSON");
        assert_eq!(syntax_of(""), "");
    }
}
