using System.Text.Json;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.Samples.Data;

/// <summary>
/// Readers for the standard low-resource protocols over a data folder laid out like the workplace's shared data
/// (see its README): LM-BFF 16-shot splits (<c>&lt;Task&gt;/k-shot/16-&lt;seed&gt;/{train,dev}.tsv</c>, evaluation on
/// <c>k-shot/test.tsv</c> = the official GLUE dev set) for SST-2, CoLA, MRPC, RTE, QNLI; FewGLUE 32-shot
/// (<c>train32.jsonl</c>, <c>dev32.jsonl</c>, evaluation on <c>dev.jsonl</c>) for CB and BoolQ.
/// </summary>
public static class FewShotBenchmarks
{
    /// <summary>Tasks this reader knows.</summary>
    public static IReadOnlyList<string> Tasks { get; } = ["SST-2", "CoLA", "MRPC", "RTE", "QNLI", "CB", "BoolQ"];

    /// <summary>LM-BFF seeds.</summary>
    public static IReadOnlyList<int> LmBffSeeds { get; } = [13, 21, 42, 87, 100];

    /// <summary>The template and label values (in score order) of <paramref name="task"/>; no file is read.</summary>
    public static (TaskTemplate Template, string[] Labels) Describe(string task) => task switch
    {
        "SST-2" => (TaskTemplates.Sst2, ["0", "1"]),
        "CoLA" => (TaskTemplates.Cola, ["0", "1"]),
        "MRPC" => (TaskTemplates.Mrpc, ["0", "1"]),
        "RTE" => (TaskTemplates.Rte, ["entailment", "not_entailment"]),
        "QNLI" => (TaskTemplates.Qnli, ["entailment", "not_entailment"]),
        "CB" => (TaskTemplates.Cb, ["entailment", "contradiction", "neutral"]),
        "BoolQ" => (TaskTemplates.BoolQ, ["False", "True"]),
        _ => throw new ArgumentException($"Unknown task '{task}'. Known: {string.Join(", ", Tasks)}.", nameof(task)),
    };

    /// <summary>Loads <paramref name="task"/> from <paramref name="dataRoot"/> (seed needed for LM-BFF tasks).</summary>
    public static FewShotTask Load(string dataRoot, string task, int seed = 13)
    {
        if (!Directory.Exists(dataRoot)) throw new DirectoryNotFoundException($"Data folder not found: '{dataRoot}'.");
        var (template, labels) = Describe(task);
        var (train, dev, test) = SplitFiles(dataRoot, task, seed);
        if (task is "CB" or "BoolQ")
            return new FewShotTask(task, null, labels, template, ReadJsonl(train, task, labels), ReadJsonl(dev, task, labels), ReadJsonl(test, task, labels));
        var shots = Path.GetDirectoryName(train)!;
        if (!Directory.Exists(shots)) throw new DirectoryNotFoundException($"{task}: few-shot split for seed {seed} not found at '{shots}' (LM-BFF seeds: {string.Join(", ", LmBffSeeds)}).");
        return new FewShotTask(task, seed, labels, template, ReadTsv(train, task, labels), ReadTsv(dev, task, labels), ReadTsv(test, task, labels));
    }

    /// <summary>The files <see cref="Load"/> reads for <paramref name="task"/> (and <paramref name="seed"/> for LM-BFF tasks); nothing is read.</summary>
    public static (string Train, string Dev, string Test) SplitFiles(string dataRoot, string task, int seed = 13)
    {
        string dir = Path.Combine(dataRoot, task);
        if (task is "CB" or "BoolQ") return (Path.Combine(dir, "train32.jsonl"), Path.Combine(dir, "dev32.jsonl"), Path.Combine(dir, "dev.jsonl"));
        var shots = Path.Combine(dir, "k-shot", $"16-{seed}");
        return (Path.Combine(shots, "train.tsv"), Path.Combine(shots, "dev.tsv"), Path.Combine(dir, "k-shot", "test.tsv"));
    }

    /// <summary>
    /// The task's full official GLUE training split (<c>&lt;Task&gt;/train.tsv</c>), for building a stand-in teacher
    /// that knows the task; null for tasks that have none here (CB, BoolQ). Never the dev or few-shot dev files.
    /// </summary>
    public static IReadOnlyList<TextPairRow>? LoadFullTrainingSplit(string dataRoot, string task)
    {
        var (_, labels) = Describe(task);
        if (task is "CB" or "BoolQ") return null;
        var path = Path.Combine(dataRoot, task, "train.tsv");
        return File.Exists(path) ? ReadTsv(path, task, labels) : null;
    }

    private static List<TextPairRow> ReadTsv(string path, string task, IReadOnlyList<string> labels)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{task}: file not found: '{path}'.", path);
        var lines = Utf8TextFile.ReadAllLines(path);
        if (lines.Length == 0) throw new InvalidDataException($"{path}: the file is empty; expected {(task == "CoLA" ? "tab-separated rows" : "a tab-separated header row, then examples")}.");
        var rows = new List<TextPairRow>();
        if (task == "CoLA")
        {
            // No header: source, label, original judgement, sentence.
            for (int i = 0; i < lines.Length; i++)
            {
                if (lines[i].Length == 0) continue;
                var f = lines[i].Split('\t');
                if (f.Length < 4) throw new InvalidDataException($"{path} line {i + 1}: expected 4 tab-separated fields (source, label, judgement, sentence), found {f.Length}.");
                rows.Add(LabelledTsv.Checked(new TextPairRow { Text = f[3], Label = f[1] }, path, i + 1, labels));
            }
            return LabelledTsv.NotEmpty(rows, path);
        }
        return task switch
        {
            "SST-2" => LabelledTsv.Read(path, lines, ["sentence"], null, "label", labels),
            "MRPC" => LabelledTsv.Read(path, lines, ["#1 String"], ["#2 String"], "Quality", labels),
            "RTE" => LabelledTsv.Read(path, lines, ["sentence1"], ["sentence2"], "label", labels),
            _ => LabelledTsv.Read(path, lines, ["question"], ["sentence"], "label", labels),
        };
    }

    private static List<TextPairRow> ReadJsonl(string path, string task, IReadOnlyList<string> labels)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{task}: file not found: '{path}'.", path);
        var rows = new List<TextPairRow>();
        int lineNumber = 0;
        foreach (var line in Utf8TextFile.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); }
            catch (JsonException e) { throw new InvalidDataException($"{path} line {lineNumber}: not a JSON object ({e.Message.Split(" LineNumber:")[0]}).", e); }
            using var _ = doc;
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path} line {lineNumber}: expected a JSON object, found {root.ValueKind}.");
            string Get(string name) => root.TryGetProperty(name, out var v)
                ? v.ValueKind switch { JsonValueKind.True => "True", JsonValueKind.False => "False", _ => v.ToString() }
                : throw new InvalidDataException($"{path} line {lineNumber}: field '{name}' is missing.");
            rows.Add(LabelledTsv.Checked(task == "CB"
                ? new TextPairRow { Text = Get("premise"), Text2 = Get("hypothesis"), Label = Get("label") }
                : new TextPairRow { Text = Get("passage"), Text2 = Get("question"), Label = Get("label") }, path, lineNumber, labels));
        }
        return LabelledTsv.NotEmpty(rows, path);
    }
}
