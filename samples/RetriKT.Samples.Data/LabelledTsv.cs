using RetriKT.MLNet.Common;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.Samples.Data;

/// <summary>
/// Labelled examples in tab-separated files with a header row: the GLUE files of <see cref="FewShotBenchmarks"/>, and a
/// user's own task (<see cref="LoadTask"/>). Every bad row fails with one line naming the file, the line and what was
/// expected; so does a byte that is not UTF-8 (<see cref="Utf8TextFile"/>), which would otherwise be read as U+FFFD.
/// </summary>
public static class LabelledTsv
{
    /// <summary>Column names an own task's (first) text may have, in the order they are looked for.</summary>
    public static IReadOnlyList<string> TextColumns { get; } = ["text", "sentence", "sentence1"];

    /// <summary>Column names an own pair task's second text may have, in the order they are looked for.</summary>
    public static IReadOnlyList<string> Text2Columns { get; } = ["text2", "sentence2"];

    /// <summary>The label column of an own task.</summary>
    public const string LabelColumn = "label";

    /// <summary>
    /// A user's own task from three files with a header row holding a <c>text</c> (or <c>sentence</c>, <c>sentence1</c>)
    /// column, for a pair <paramref name="template"/> a <c>text2</c> (or <c>sentence2</c>) column, and a <c>label</c> column:
    /// the few-shot examples to learn from, the rows that choose among models (never trained on) and the rows to score (never
    /// tuned on). <paramref name="labels"/> (in score order) each need a verbalizer word in <paramref name="template"/> and an
    /// example in <paramref name="trainPath"/>; every row's label must be one of them. A dev row may not repeat a training
    /// row's texts, nor a test row those of a training or dev row.
    /// </summary>
    public static FewShotTask LoadTask(string trainPath, string devPath, string testPath, TaskTemplate template, IReadOnlyList<string> labels)
    {
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(labels);
        template.Validate(labels);
        var text2Columns = template.IsPair ? Text2Columns : null;
        var train = Read(trainPath, text2Columns, labels);
        foreach (var label in labels)
            if (!train.Any(r => r.Row.Label == label))
                throw new InvalidDataException($"{trainPath}: no example has label '{label}'; each of the labels [{string.Join(", ", labels)}] needs a few.");
        var dev = Read(devPath, text2Columns, labels);
        var test = Read(testPath, text2Columns, labels);
        RequireApart(devPath, dev, [(trainPath, train)], "the training file", "the rows chosen on must be apart from the rows learned on");
        RequireApart(testPath, test, [(trainPath, train), (devPath, dev)], "the training or dev file", "the rows scored must be apart from the rows learned or chosen on");
        return new FewShotTask(template.Name, null, labels, template, Rows(train), Rows(dev), Rows(test));
    }

    /// <summary>
    /// No row of <paramref name="path"/> has the texts of a row of <paramref name="others"/>: a test row that is also a
    /// training row is scored on what the student learned (its store holds the training rows, which retrieval finds at
    /// similarity 1), and a dev row that is also one chooses the model on it; either accuracy reads like a held-out one.
    /// </summary>
    private static void RequireApart(string path, List<(TextPairRow Row, int Line)> rows, (string Path, List<(TextPairRow Row, int Line)> Rows)[] others,
        string othersName, string rule)
    {
        var seen = new Dictionary<(string, string), (string Path, int Line)>();
        foreach (var (otherPath, otherRows) in others)
            foreach (var (row, line) in otherRows)
                seen.TryAdd((row.Text, row.Text2), (otherPath, line));
        var shared = rows.Where(r => seen.ContainsKey((r.Row.Text, r.Row.Text2))).ToList();
        if (shared.Count == 0) return;
        var (first, firstLine) = shared[0];
        var (where, whereLine) = seen[(first.Text, first.Text2)];
        throw new InvalidDataException($"{path} line {firstLine}: the same text as {where} line {whereLine} ({shared.Count} of its {rows.Count} rows are in {othersName}); {rule}.");
    }

    private static List<(TextPairRow Row, int Line)> Read(string path, IReadOnlyList<string>? text2Columns, IReadOnlyList<string> labels)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"File not found: '{path}'.", path);
        // Strict UTF-8: a file saved as Latin-1 would otherwise be learned and scored with U+FFFD in its texts.
        var lines = Utf8TextFile.ReadAllLines(path);
        if (lines.Length == 0) throw new InvalidDataException($"{path}: the file is empty; expected a tab-separated header row, then examples.");
        if (text2Columns is null && lines[0].TrimStart('\uFEFF').Split('\t').FirstOrDefault(Text2Columns.Contains) is { } second)
            throw new InvalidDataException($"{path} line 1: column '{second}' holds second texts, but the template reads one text; " +
                                           "use a sentence-pair template (with {text2}) or remove the column.");
        return ReadNumbered(path, lines, TextColumns, text2Columns, LabelColumn, labels);
    }

    /// <summary>
    /// Rows of <paramref name="lines"/> (header first) with the text in the first of <paramref name="textColumns"/> the header
    /// has, the second text (when <paramref name="text2Columns"/> is given) likewise, and the label; empty lines are skipped,
    /// fields trimmed, and an empty text fails.
    /// </summary>
    internal static List<TextPairRow> Read(string path, string[] lines, IReadOnlyList<string> textColumns, IReadOnlyList<string>? text2Columns,
        string labelColumn, IReadOnlyList<string> labels) =>
        Rows(ReadNumbered(path, lines, textColumns, text2Columns, labelColumn, labels));

    /// <summary>The rows without their line numbers.</summary>
    private static List<TextPairRow> Rows(List<(TextPairRow Row, int Line)> rows) => rows.Select(r => r.Row).ToList();

    /// <summary><see cref="Read(string, string[], IReadOnlyList{string}, IReadOnlyList{string}?, string, IReadOnlyList{string})"/>, each row with its 1-based line.</summary>
    private static List<(TextPairRow Row, int Line)> ReadNumbered(string path, string[] lines, IReadOnlyList<string> textColumns, IReadOnlyList<string>? text2Columns,
        string labelColumn, IReadOnlyList<string> labels)
    {
        var header = lines[0].TrimStart('\uFEFF').Split('\t');
        string format = header.Length == 1 && header[0].Contains(',') ? " (the file looks comma-separated; expected tab-separated)" : "";
        int Column(IReadOnlyList<string> names) => names.Select(n => Array.IndexOf(header, n)).FirstOrDefault(i => i >= 0, -1) is var i and >= 0 ? i
            : throw new InvalidDataException($"{path} line 1: column '{names[0]}'{(names.Count > 1 ? $" (or '{string.Join("' or '", names.Skip(1))}')" : "")} not found in header [{string.Join(", ", header)}]{format}.");
        int text = Column(textColumns), text2 = text2Columns is null ? -1 : Column(text2Columns), label = Column([labelColumn]);
        int needed = Math.Max(text, Math.Max(text2, label)) + 1;
        var rows = new List<(TextPairRow Row, int Line)>();
        for (int i = 1; i < lines.Length; i++)
        {
            if (lines[i].Length == 0) continue;
            var f = lines[i].Split('\t');
            if (f.Length < needed) throw new InvalidDataException($"{path} line {i + 1}: expected at least {needed} tab-separated fields, found {f.Length}.");
            // More fields than the header names: a text holding a tab, cut there without a word if it were read on.
            if (f.Length > header.Length && f.Skip(header.Length).Any(x => x.Trim().Length > 0))
                throw new InvalidDataException($"{path} line {i + 1}: expected {header.Length} tab-separated fields (the header's), found {f.Length}; " +
                                               "does a text hold a tab?");
            foreach (int column in (int[])[text, text2])
                if (column >= 0 && f[column].Trim().Length == 0)
                    throw new InvalidDataException($"{path} line {i + 1}: the {(column == text ? "text" : "second text")} (column '{header[column]}') is empty.");
            rows.Add((Checked(new TextPairRow { Text = f[text].Trim(), Text2 = text2 >= 0 ? f[text2].Trim() : "", Label = f[label].Trim() }, path, i + 1, labels), i + 1));
        }
        return rows.Count > 0 ? rows : throw new InvalidDataException($"{path}: holds no examples.");
    }

    /// <summary>
    /// A row's label must be one of the task's labels: a split with other labels (another task's file, a renamed
    /// label) would otherwise score 0 % on every row without an error.
    /// </summary>
    internal static TextPairRow Checked(TextPairRow row, string path, int line, IReadOnlyList<string> labels) => labels.Contains(row.Label) ? row
        : throw new InvalidDataException($"{path} line {line}: label '{row.Label}' is not one of the task's labels [{string.Join(", ", labels)}].");

    internal static List<TextPairRow> NotEmpty(List<TextPairRow> rows, string path) => rows.Count > 0 ? rows
        : throw new InvalidDataException($"{path}: holds no examples.");
}
