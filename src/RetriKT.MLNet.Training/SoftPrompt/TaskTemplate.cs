using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.SoftPrompt;

/// <summary>What the teacher generates for a task.</summary>
public enum GenerationTarget
{
    /// <summary>The whole sample: the text (single-sentence tasks), or both parts joined by <see cref="TaskTemplate.PairSeparator"/>.</summary>
    WholeSample,
    /// <summary>Only the second part (hypothesis, question, paraphrase), conditioned on a first part drawn from the task's own texts.</summary>
    SecondPart,
}

/// <summary>
/// A task described as data, so one trainer serves single-sentence tasks (SST-2, CoLA) and sentence-pair tasks (RTE,
/// MRPC, CB, BoolQ, QNLI) without code per task. Placeholders: <c>{text}</c>, <c>{text2}</c> (the two input columns)
/// and, in <see cref="ClassificationFormat"/>, <c>{label}</c> (the label word of the verbalizer).
/// </summary>
public sealed record TaskTemplate
{
    /// <summary>Name for logs and reports.</summary>
    public string Name { get; init; } = "task";
    /// <summary>Column of the first text. Default "Text".</summary>
    public string TextColumn { get; init; } = "Text";
    /// <summary>Column of the second text for pair tasks, or null. Default null.</summary>
    public string? Text2Column { get; init; }
    /// <summary>What the teacher generates. Default <see cref="GenerationTarget.WholeSample"/>.</summary>
    public GenerationTarget Target { get; init; } = GenerationTarget.WholeSample;
    /// <summary>
    /// For <see cref="GenerationTarget.SecondPart"/>: the visible context the second part is generated after, e.g.
    /// <c>"{text}\nQuestion:"</c>. For whole pair samples: the text between the two parts. Default "\n".
    /// </summary>
    public string PairSeparator { get; init; } = "\n";
    /// <summary>
    /// The verbalizer classification prompt: the teacher scores each label word at <c>{label}</c>. Default
    /// <c>"{text} It was{label}"</c> (single sentence).
    /// </summary>
    public string ClassificationFormat { get; init; } = "{text} It was{label}";
    /// <summary>Label value (as text) → label word, for example "0" → " terrible". Every label needs one.</summary>
    public IReadOnlyDictionary<string, string> Verbalizer { get; init; } = new Dictionary<string, string>();
    /// <summary>Generated samples shorter than this many words are degenerate. Default 3.</summary>
    public int MinWords { get; init; } = 3;
    /// <summary>Generated samples longer than this many tokens are cut. Default 48.</summary>
    public int MaxNewTokens { get; init; } = 48;

    /// <summary>The least <see cref="MaxNewTokens"/> a template (and <see cref="SoftPromptPpoOptions.MaxNewTokens"/>) may ask for.</summary>
    internal const int MinimumMaxNewTokens = 2;

    /// <summary>Whether the task has a second text.</summary>
    public bool IsPair => Text2Column is not null;

    /// <summary>The text the teacher is trained to generate (stage 1) for one example.</summary>
    public string RenderTarget(string text, string? text2) => Target switch
    {
        GenerationTarget.SecondPart => text2 ?? throw new ArgumentException($"Template '{Name}' generates the second part, but the example has no '{Text2Column}'."),
        _ => IsPair ? text + PairSeparator + (text2 ?? "") : text,
    };

    /// <summary>
    /// <see cref="RenderTarget"/> as the teacher reads it after <see cref="RenderContext"/>: a second part follows its
    /// context after one space ("…\nQuestion: Is it…", as the soft prompt is trained and as generation writes it; trimmed
    /// off in the stored sample), a whole sample starts a text.
    /// </summary>
    public string RenderContinuation(string text, string? text2) =>
        Target == GenerationTarget.SecondPart ? " " + RenderTarget(text, text2) : RenderTarget(text, text2);

    /// <summary>The visible context before the generated part (empty for whole samples).</summary>
    public string RenderContext(string text) => Target == GenerationTarget.SecondPart ? text + PairSeparator : "";

    /// <summary>Splits a generated whole pair sample back into its two parts (second part null if the separator is absent).</summary>
    public (string Text, string? Text2) SplitGenerated(string context, string generated)
    {
        if (Target == GenerationTarget.SecondPart) return (context, generated.Trim());
        if (!IsPair) return (generated.Trim(), null);
        int at = generated.IndexOf(PairSeparator, StringComparison.Ordinal);
        return at < 0 ? (generated.Trim(), null) : (generated[..at].Trim(), generated[(at + PairSeparator.Length)..].Trim());
    }

    /// <summary>
    /// Where generation of a sample stops: a new line, and the template text that follows the generated part in the
    /// classification prompt (" It was" for SST-2, "? Answer:" for RTE). A teacher that learned its task through this
    /// template (a real LLM prompted this way, or the harness's stand-in teacher) otherwise writes the label phrase into
    /// the sample, and the store would hold "… It was great" with the answer in the text.
    /// </summary>
    public IReadOnlyList<string> GenerationStops
    {
        get
        {
            string slot = Target == GenerationTarget.SecondPart || IsPair ? "{text2}" : "{text}";
            int from = ClassificationFormat.IndexOf(slot, StringComparison.Ordinal);
            int to = ClassificationFormat.IndexOf("{label}", StringComparison.Ordinal);
            var stops = new List<string> { "\n" };
            if (from >= 0 && to > from)
            {
                var infix = ClassificationFormat[(from + slot.Length)..to].Trim();
                if (infix.Length > 0 && !infix.Contains('{')) stops.Add(infix);
            }
            return stops;
        }
    }

    /// <summary>Cuts <paramref name="generated"/> at the first of <see cref="GenerationStops"/> (whole-pair samples keep their new lines).</summary>
    public string CutAtStops(string generated)
    {
        ArgumentNullException.ThrowIfNull(generated);
        int cut = generated.Length;
        bool templateStop = false;
        foreach (var stop in GenerationStops)
        {
            if (stop == "\n" && IsPair && Target == GenerationTarget.WholeSample) continue;
            int at = generated.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && at < cut) (cut, templateStop) = (at, stop != "\n");
        }
        // Only the space before a template phrase goes; text before a new line is kept as generated.
        return templateStop ? generated[..cut].TrimEnd() : generated[..cut];
    }

    /// <summary>The classification prompt for one sample with the label word inserted.</summary>
    public string RenderClassification(string text, string? text2, string labelWord)
        => ClassificationFormat.Replace("{text}", text).Replace("{text2}", text2 ?? "").Replace("{label}", labelWord);

    /// <summary>The classification prompt split at <c>{label}</c>: (prefix, suffix) around the label word.</summary>
    public (string Prefix, string Suffix) ClassificationParts(string text, string? text2)
    {
        int at = ClassificationFormat.IndexOf("{label}", StringComparison.Ordinal);
        string Fill(string s) => s.Replace("{text}", text).Replace("{text2}", text2 ?? "");
        return (Fill(ClassificationFormat[..at]), Fill(ClassificationFormat[(at + "{label}".Length)..]));
    }

    /// <summary>
    /// Why the teacher cannot label a row of this template's text columns, naming the column, or null when it can: the
    /// first text, or a pair task's second text, is empty or holds only characters the student's tokenizer drops (a
    /// zero-width space, a NUL, a lone combining mark: <see cref="TextTokenizingTransformer.HasWordCharacter"/>, the test
    /// the runtime refuses such a text by). Labelled and stored, such a row trains the student on an input it is never
    /// served. The one decision for every reader of rows to label (few-shot examples, UnlabeledData, the extractor's
    /// Transform); each puts its source and row in front.
    /// </summary>
    internal string? MissingText(string text, string? text2)
    {
        if (!TextTokenizingTransformer.HasWordCharacter(text))
            return $"column '{TextColumn}' {Emptiness(text)}; expected a text for the teacher to label.";
        if (IsPair && !TextTokenizingTransformer.HasWordCharacter(text2))
            return $"column '{Text2Column}' (the second text) {Emptiness(text2)}; template '{Name}' reads sentence pairs.";
        return null;
    }

    /// <summary>Why a text <see cref="TextTokenizingTransformer.HasWordCharacter"/> refuses is no text, for a message: "is empty" or what it holds.</summary>
    internal static string Emptiness(string? text) => string.IsNullOrWhiteSpace(text) ? "is empty"
        : "holds only characters the tokenizer drops (control, zero-width or private-use characters, combining marks), so it encodes as an empty one";

    /// <summary>
    /// Validates the template against its label set and an input schema; every message names the field or column.
    /// </summary>
    public void Validate(IReadOnlyList<string> labels, DataViewSchema? schema = null)
    {
        if (!ClassificationFormat.Contains("{label}", StringComparison.Ordinal))
            throw new ArgumentException($"Template '{Name}': ClassificationFormat must contain {{label}}, found \"{ClassificationFormat}\".");
        if (!ClassificationFormat.Contains("{text}", StringComparison.Ordinal))
            throw new ArgumentException($"Template '{Name}': ClassificationFormat must contain {{text}}, found \"{ClassificationFormat}\".");
        if (IsPair && !ClassificationFormat.Contains("{text2}", StringComparison.Ordinal))
            throw new ArgumentException($"Template '{Name}': a pair task's ClassificationFormat must contain {{text2}}, found \"{ClassificationFormat}\".");
        if (!IsPair && Target == GenerationTarget.SecondPart)
            throw new ArgumentException($"Template '{Name}': Target = SecondPart needs Text2Column.");
        foreach (var label in labels)
            if (!Verbalizer.TryGetValue(label, out var word) || string.IsNullOrEmpty(word))
                throw new ArgumentException($"Template '{Name}': the verbalizer has no word for label '{label}' (labels: {string.Join(", ", labels)}).");
        // Two labels with one word cannot be told apart by the verbalizer: name the pair, not only the word list.
        var firstWithWord = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var label in labels)
            if (!firstWithWord.TryAdd(Verbalizer[label], label))
                throw new ArgumentException($"Template '{Name}': labels '{firstWithWord[Verbalizer[label]]}' and '{label}' have the same verbalizer word " +
                    $"\"{Verbalizer[label]}\"; verbalizer words must differ per label.");
        if (MinWords < 1 || MaxNewTokens < MinimumMaxNewTokens)
            throw new ArgumentException($"Template '{Name}': MinWords must be >= 1 and MaxNewTokens >= {MinimumMaxNewTokens}, found {MinWords} and {MaxNewTokens}.");
        if (schema is not null) CheckTextColumns(SchemaShapes.Of(schema));
    }

    /// <summary>
    /// The check of the text columns the template reads, for every component that reads them (prompt trainer, prompt
    /// transformer, knowledge extractor and its transformer, black-box extractor, unlabelled data): each is in
    /// <paramref name="input"/> and String, else one line naming the column, the type it needs, the template and what
    /// the data has: "Column 'Text' (String) is needed by template 'SST-2'; found Single." (no parameter name: hosts
    /// print it as it is).
    /// </summary>
    /// <param name="input">The columns the component is given.</param>
    /// <param name="data">Which data, when it is not the component's input (<c>"UnlabeledData"</c>): the message starts with it.</param>
    /// <param name="firstOnly">Only <see cref="TextColumn"/> (a transformer that reads only the first part).</param>
    internal void CheckTextColumns(SchemaShape input, string? data = null, bool firstOnly = false)
    {
        static string Found(SchemaShape.Column c) => c.Kind switch
        {
            SchemaShape.Column.VectorKind.Scalar => $"{c.ItemType}",
            SchemaShape.Column.VectorKind.Vector => $"Vector<{c.ItemType}>",
            _ => $"Vector<{c.ItemType}> of variable size",
        } + (c.IsKey ? " (key)" : "");
        string Needed(string name) => $"{(data is null ? "Column" : data + ": column")} '{name}' (String) is needed by template '{Name}'";
        foreach (var name in firstOnly ? [TextColumn] : new[] { TextColumn, Text2Column })
        {
            if (name is null) continue;
            var column = input.FirstOrDefault(c => c.Name == name);
            if (column.Name is null)
                throw new ArgumentOutOfRangeException(paramName: null, $"{Needed(name)}; found no such column. Columns: {string.Join(", ", input.Select(c => $"'{c.Name}'"))}.");
            if (column.Kind != SchemaShape.Column.VectorKind.Scalar || column.ItemType is not TextDataViewType)
                throw new ArgumentOutOfRangeException(paramName: null, $"{Needed(name)}; found {Found(column)}.");
        }
    }
}

/// <summary>Ready-made templates for the GLUE / SuperGLUE tasks of the paper's evaluation (label values as in ../shared/data).</summary>
public static class TaskTemplates
{
    /// <summary>SST-2 sentiment (labels "0" negative, "1" positive).</summary>
    public static TaskTemplate Sst2 { get; } = new()
    {
        Name = "SST-2",
        ClassificationFormat = "{text} It was{label}",
        Verbalizer = new Dictionary<string, string> { ["0"] = " terrible", ["1"] = " great" },
    };

    /// <summary>CoLA acceptability (labels "0" unacceptable, "1" acceptable).</summary>
    public static TaskTemplate Cola { get; } = new()
    {
        Name = "CoLA",
        ClassificationFormat = "{text} This is{label}",
        Verbalizer = new Dictionary<string, string> { ["0"] = " incorrect", ["1"] = " correct" },
    };

    /// <summary>RTE entailment (GLUE labels "entailment", "not_entailment"); generates the hypothesis for a premise.</summary>
    public static TaskTemplate Rte { get; } = new()
    {
        Name = "RTE",
        Text2Column = "Text2",
        Target = GenerationTarget.SecondPart,
        PairSeparator = "\nQuestion:",
        ClassificationFormat = "{text} Question: {text2}? Answer:{label}",
        Verbalizer = new Dictionary<string, string> { ["entailment"] = " yes", ["not_entailment"] = " no" },
    };

    /// <summary>MRPC paraphrase (labels "0", "1"); generates the second sentence.</summary>
    public static TaskTemplate Mrpc { get; } = new()
    {
        Name = "MRPC",
        Text2Column = "Text2",
        Target = GenerationTarget.SecondPart,
        PairSeparator = "\nIn other words:",
        ClassificationFormat = "{text} In other words: {text2}? Answer:{label}",
        Verbalizer = new Dictionary<string, string> { ["0"] = " no", ["1"] = " yes" },
    };

    /// <summary>CB (labels "entailment", "contradiction", "neutral"); generates the hypothesis.</summary>
    public static TaskTemplate Cb { get; } = new()
    {
        Name = "CB",
        Text2Column = "Text2",
        Target = GenerationTarget.SecondPart,
        PairSeparator = "\nQuestion:",
        ClassificationFormat = "{text} Question: {text2}? Answer:{label}",
        Verbalizer = new Dictionary<string, string> { ["entailment"] = " yes", ["contradiction"] = " no", ["neutral"] = " maybe" },
    };

    /// <summary>BoolQ (labels "False", "True"; Text = passage, Text2 = question); generates the question.</summary>
    public static TaskTemplate BoolQ { get; } = new()
    {
        Name = "BoolQ",
        Text2Column = "Text2",
        Target = GenerationTarget.SecondPart,
        PairSeparator = "\nQuestion:",
        ClassificationFormat = "{text} Question: {text2}? Answer:{label}",
        Verbalizer = new Dictionary<string, string> { ["False"] = " no", ["True"] = " yes" },
    };

    /// <summary>QNLI (labels "entailment", "not_entailment"; Text = question, Text2 = sentence); generates the sentence.</summary>
    public static TaskTemplate Qnli { get; } = new()
    {
        Name = "QNLI",
        Text2Column = "Text2",
        Target = GenerationTarget.SecondPart,
        PairSeparator = "\nAnswer sentence:",
        ClassificationFormat = "{text} Answer sentence: {text2}? Does it answer:{label}",
        Verbalizer = new Dictionary<string, string> { ["entailment"] = " yes", ["not_entailment"] = " no" },
    };
}
