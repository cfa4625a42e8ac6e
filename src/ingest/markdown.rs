//! Markdown: the text of headings, paragraphs, lists, tables and code,
//! without markup; blocks end with a blank line so chunking keeps them.
//! Front matter (a YAML metadata block that opens the file) goes last: it
//! stays searchable, and the document still opens with its own first
//! heading, which chunking takes as the title. pulldown-cmark also reads a
//! later `---` ... `---` span as a metadata block; that text stays where it
//! is.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

pub fn to_text(source: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    let mut body = String::with_capacity(source.len());
    let mut metadata = String::new();
    let mut in_front_matter = false;
    for (n, event) in Parser::new_ext(source, options).enumerate() {
        let out = if in_front_matter { &mut metadata } else { &mut body };
        match event {
            Event::Start(Tag::MetadataBlock(_)) if n == 0 => in_front_matter = true,
            Event::End(TagEnd::MetadataBlock(_)) => {
                in_front_matter = false;
                out.push_str("\n\n");
            }
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
                | TagEnd::List(_),
            ) => out.push_str("\n\n"),
            _ => {}
        }
    }
    body.push_str(&metadata);
    body
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

    #[test]
    fn front_matter_follows_the_body() {
        let text =
            super::to_text("---\ntitle: Incident 2291\n---\n# Incident 2291: cache stampede\n\nBody.\n");
        assert!(
            text.starts_with("Incident 2291: cache stampede\n\nBody."),
            "{text:?}"
        );
        assert!(
            text.contains("title: Incident 2291"),
            "still searchable: {text:?}"
        );
        // A later `---` span is not front matter: it stays in place.
        let text = super::to_text("# Guide\n\nIntro.\n\n---\nPart two.\n\n---\n\nPart three.\n");
        let (two, three) = (text.find("Part two"), text.find("Part three"));
        assert!(two.is_some() && two < three, "{text:?}");
    }
}
