//! Markdown: the text of headings, paragraphs, lists, tables and code,
//! without markup; blocks end with a blank line so chunking keeps them.

use pulldown_cmark::{Event, Options, Parser, TagEnd};

pub fn to_text(source: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    let mut out = String::with_capacity(source.len());
    for event in Parser::new_ext(source, options) {
        match event {
            Event::Text(text) | Event::Code(text) | Event::InlineMath(text) | Event::DisplayMath(text) => {
                out.push_str(&text);
            }
            Event::SoftBreak | Event::HardBreak => out.push('\n'),
            Event::End(TagEnd::TableCell) => out.push_str(" | "),
            Event::End(TagEnd::TableRow | TagEnd::TableHead | TagEnd::Item) => out.push('\n'),
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_)
                | TagEnd::Table
                | TagEnd::List(_)
                | TagEnd::MetadataBlock(_),
            ) => out.push_str("\n\n"),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_is_dropped_and_text_kept() {
        let text = super::to_text("# Title\n\nSome **bold** text.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert!(text.contains("Title\n\n"));
        assert!(text.contains("Some bold text."));
        assert!(text.contains("1 | 2"));
        assert!(!text.contains("**"));
    }
}
