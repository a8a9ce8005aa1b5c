//! Text for people: the column tables the CLI prints for node and controller views alike.

/// Left-aligned columns under a header row, two spaces apart, no trailing blanks.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    std::iter::once(header)
        .chain(rows)
        .map(|row| {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:w$}"))
                .collect();
            format!("{}\n", line.join("  ").trim_end())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_without_trailing_blanks() {
        let text = table(
            &["NAME", "ADDRESS"],
            vec![
                vec!["n1".into(), "10.0.0.1".into()],
                vec!["longer".into(), String::new()],
            ],
        );
        assert_eq!(text, "NAME    ADDRESS\nn1      10.0.0.1\nlonger\n");
    }
}
