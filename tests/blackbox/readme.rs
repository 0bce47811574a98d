//! The README as a newcomer meets it: rendered by a CommonMark renderer with GitHub's
//! tables (no table broken into a paragraph of pipes, every row as wide as its header,
//! the Mermaid diagrams as `mermaid` code blocks, every relative link pointing at a file
//! of the repo).

use std::ops::Range;
use std::path::{Path, PathBuf};

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// Line number (1-based) of a byte offset.
fn line_at(md: &str, offset: usize) -> usize {
    md[..offset.min(md.len())].matches('\n').count() + 1
}

/// Cells of one source row of a GitHub table: the unescaped pipes, less one (every row
/// of ours starts and ends with a pipe).
fn cells(row: &str) -> usize {
    let bytes = row.as_bytes();
    let pipes = (0..bytes.len())
        .filter(|&i| bytes[i] == b'|' && (i == 0 || bytes[i - 1] != b'\\'))
        .count();
    pipes.saturating_sub(1)
}

/// What a render of `md` shows wrong, one message per problem, and how many relative
/// links were checked against `repo`.
fn render_problems(md: &str, repo: &Path) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut tables: Vec<Range<usize>> = Vec::new();
    let mut code: Vec<Range<usize>> = Vec::new();
    let mut mermaid_blocks = 0;
    let mut links = 0;
    let mut columns = 0;
    let repo = repo.canonicalize().expect("repo dir");
    for (event, range) in Parser::new_ext(md, Options::ENABLE_TABLES).into_offset_iter() {
        match event {
            Event::Start(Tag::Table(alignments)) => {
                columns = alignments.len();
                tables.push(range);
            }
            Event::Start(Tag::TableHead) | Event::Start(Tag::TableRow) => {
                let row = md[range.clone()].lines().next().unwrap_or("").trim();
                let line = line_at(md, range.start);
                if !(row.starts_with('|') && row.ends_with('|')) {
                    problems.push(format!("line {line}: a table row should start and end with `|`"));
                } else if cells(row) != columns {
                    problems.push(format!(
                        "line {line}: {} cells in a table of {columns} columns",
                        cells(row)
                    ));
                }
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                if matches!(&kind, CodeBlockKind::Fenced(lang) if lang.as_ref() == "mermaid") {
                    mermaid_blocks += 1;
                }
                code.push(range);
            }
            Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. }) => {
                let line = line_at(md, range.start);
                let dest = dest_url.as_ref();
                if dest.contains("://") || dest.starts_with("mailto:") || dest.starts_with('#') {
                    continue;
                }
                links += 1;
                let path = dest.split(['#', '?']).next().unwrap_or("");
                if dest.starts_with('/') {
                    problems.push(format!(
                        "line {line}: `{dest}` is an absolute path, not a file of the repo"
                    ));
                    continue;
                }
                match repo.join(path).canonicalize() {
                    Ok(found) if found.starts_with(&repo) => {}
                    Ok(_) => problems.push(format!("line {line}: `{dest}` points outside the repo")),
                    Err(_) => problems.push(format!("line {line}: `{dest}` does not exist in the repo")),
                }
            }
            _ => {}
        }
    }
    let inside = |ranges: &[Range<usize>], at: usize| ranges.iter().any(|r| r.contains(&at));
    let mut offset = 0;
    let mut mermaid_fences = 0;
    for line in md.split_inclusive('\n') {
        if !inside(&code, offset) || code.iter().any(|r| r.start == offset) {
            if line.starts_with("```mermaid") {
                mermaid_fences += 1;
            }
            if line.starts_with('|') && !inside(&tables, offset) {
                problems.push(format!(
                    "line {}: a `|` row outside any table (renders as a paragraph of pipes)",
                    line_at(md, offset)
                ));
            }
        }
        offset += line.len();
    }
    if mermaid_fences != mermaid_blocks {
        problems.push(format!(
            "{mermaid_fences} ```mermaid fences but {mermaid_blocks} mermaid code blocks"
        ));
    }
    if mermaid_blocks == 0 {
        problems.push("no Mermaid diagram".to_string());
    }
    (problems, links)
}

/// If this broke, the README on GitHub would show tables as paragraphs of pipes, rows
/// with cells silently dropped or added, a diagram as plain text, or links that lead
/// nowhere (or outside the repo).
#[test]
fn the_readme_renders_as_intended() {
    let md = readme();
    let (problems, links) = render_problems(&md, &repo());
    assert!(problems.is_empty(), "README.md:\n{}", problems.join("\n"));
    assert!(
        links >= 5,
        "the README links the files it names ({links} relative links)"
    );

    // bench/run.sh writes the latest results between these markers.
    let start = md.matches("<!-- bench:latest:start -->").count();
    let end = md.matches("<!-- bench:latest:end -->").count();
    assert_eq!((start, end), (1, 1), "one pair of benchmark markers");
    let (before, after) = md.split_once("<!-- bench:latest:start -->").unwrap();
    let (_, after) = after.split_once("<!-- bench:latest:end -->").expect("end after start");
    for text in [before, after] {
        assert!(!text.contains("../shared"), "the README points inside the repo only");
    }
}

/// If this broke, the check above could pass a README with the defects it exists for.
#[test]
fn the_render_check_finds_broken_tables_diagrams_and_links() {
    let md = [
        "| a | b |",     // 1
        "| --- | --- |", // 2
        "| 1 | 2 |",     // 3
        "",              // 4: the blank line that ended the README's Commands table
        "| 3 | 4 |",     // 5
        "",
        "| a | b |",
        "| --- | --- |",
        "| 1 | 2 | 3 |", // 9: GitHub drops the third cell
        "",
        "```mermaid",
        "flowchart LR",
        "```",
        "",
        "<details>", // an HTML block: the fence below is no code block
        "```mermaid",
        "flowchart LR",
        "```",
        "</details>",
        "",
        "[gone](no/such/file.md) [root](/etc/passwd) [up](..) [ok](Cargo.toml)",
    ]
    .join("\n");
    let (problems, links) = render_problems(&md, &repo());
    let all = problems.join("\n");
    assert!(all.contains("line 5: a `|` row outside any table"), "{all}");
    assert!(all.contains("line 9: 3 cells in a table of 2 columns"), "{all}");
    assert!(all.contains("2 ```mermaid fences but 1 mermaid code blocks"), "{all}");
    assert!(all.contains("`no/such/file.md` does not exist"), "{all}");
    assert!(all.contains("`/etc/passwd` is an absolute path"), "{all}");
    assert!(all.contains("`..` points outside the repo"), "{all}");
    assert_eq!(links, 4, "{all}");
    assert_eq!(problems.len(), 6, "{all}");
    let (problems, _) = render_problems("text\n", &repo());
    assert_eq!(problems, ["no Mermaid diagram"]);
}
