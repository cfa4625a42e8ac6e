//! What a model is given: the passages that fit the context budget, and
//! the system prompt that numbers them for citation, each headed by its
//! file and the title it falls under.

use crate::types::Passage;

/// Keeps the best passages whose text fits the budget.
pub fn within_budget(hits: Vec<Passage>, budget: usize) -> Vec<Passage> {
    let mut used = 0;
    hits.into_iter()
        .take_while(|hit| {
            used += hit.text.chars().count();
            used <= budget
        })
        .collect()
}

pub fn system_prompt(passages: &[Passage]) -> String {
    let mut prompt = String::from(
        "You are ragd, an assistant that answers questions from the user's own documents.\n\
         Answer using only the numbered passages below. After each statement, cite the passage it \
         comes from with its number in square brackets, like [1] or [2][3]. If the passages do not \
         contain the answer, say that the documents do not cover it.\n\nPassages:\n",
    );
    if passages.is_empty() {
        prompt.push_str("(no passage of the user's documents matches this question)\n");
    }
    for (i, hit) in passages.iter().enumerate() {
        // The title a passage falls under, when it has one, says what the
        // passage is about.
        let origin = match hit.context.as_str() {
            "" => hit.filename.clone(),
            title => format!("{}, a document titled \"{title}\"", hit.filename),
        };
        prompt.push_str(&format!("\n[{}] ({origin})\n{}\n", i + 1, hit.text.trim()));
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passage_is_headed_by_its_file_and_title() {
        let hit = |context: &str| Passage {
            document_id: "d".into(),
            filename: "soils.md".into(),
            chunk_id: "1".into(),
            snippet: String::new(),
            score: 1.0,
            text: " Drainage decides what grows. ".into(),
            context: context.into(),
        };
        let prompt = system_prompt(&[hit("Volcanic soils"), hit("")]);
        assert!(
            prompt.contains(
                "\n[1] (soils.md, a document titled \"Volcanic soils\")\nDrainage decides what grows.\n"
            ),
            "{prompt}"
        );
        assert!(
            prompt.contains("\n[2] (soils.md)\nDrainage decides what grows.\n"),
            "{prompt}"
        );
    }
}
