//! CSV: one line per row, each cell named by its header
//! (`name: Teapot, ceramic | price: 12`), so a chunk reads on its own.

use super::ParseError;

pub fn to_text(source: &str) -> Result<String, ParseError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(source.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| ParseError::Permanent(format!("corrupt: cannot read the CSV header: {e}")))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut out = headers.join(" | ");
    out.push('\n');
    for record in reader.records() {
        let record =
            record.map_err(|e| ParseError::Permanent(format!("corrupt: cannot read the CSV: {e}")))?;
        let cells: Vec<String> = record
            .iter()
            .enumerate()
            .map(|(i, cell)| match headers.get(i).filter(|h| !h.is_empty()) {
                Some(header) => format!("{header}: {cell}"),
                None => cell.to_owned(),
            })
            .collect();
        out.push_str(&cells.join(" | "));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_commas_stay_in_their_cell() {
        let text = super::to_text("sku,name\n1,\"Teapot, ceramic\"\n").unwrap();
        assert!(text.contains("name: Teapot, ceramic"), "{text}");
    }
}
