using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.ML;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Teacher;

namespace RetriKT.Evaluation;

/// <summary>
/// Shape and pretraining budget of the teacher the harness builds when no <c>--teacher</c> is given. The defaults
/// make a ~1.2M-parameter LLaMA that pretrains in about ten minutes on two busy cores; every field enters the cache key.
/// </summary>
public sealed record TeacherSettings
{
    public int VocabSize { get; init; } = 2048;
    public int HiddenSize { get; init; } = 128;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 4;
    public int IntermediateSize { get; init; } = 344;
    public int MaxPositions { get; init; } = 256;
    public int Steps { get; init; } = 400;
    public int BatchSize { get; init; } = 16;
    public int SequenceLength { get; init; } = 96;
    public double LearningRate { get; init; } = 3e-3;
    /// <summary>Texts the BPE tokenizer is learned from (an even sample of the corpus).</summary>
    public int TokenizerTexts { get; init; } = 8_000;
    /// <summary>Part files of each extra unlabeled corpus (imdb-unsup, wikipedia-en-2015) to add; 0 uses task texts only.</summary>
    public int CorpusParts { get; init; } = 1;
    public int Seed { get; init; } = 1;

    /// <summary>Hex key of every setting plus the corpus recipe version: the cache folder name.</summary>
    public string CacheKey()
    {
        var json = JsonSerializer.Serialize(this) + "|corpus-v1";
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(json)))[..16];
    }
}

/// <summary>
/// Builds (once) and loads the harness's teacher: a byte-level BPE tokenizer and a LLaMA-style model pretrained on the
/// tasks' unlabeled training texts (labels stripped; dev/test sets never read) plus, optionally, the shared unlabeled
/// corpora (IMDb unsup reviews, Wikipedia paragraphs; checked free of SST-2 and other dev sentences). The checkpoint
/// is cached under <c>&lt;cache&gt;/teacher-&lt;settings hash&gt;/</c>; a finished build is marked by <c>done.json</c>,
/// and an interrupted build starts over in a fresh temporary folder, so a half-written teacher is never loaded.
/// </summary>
public static class TeacherBuilder
{
    /// <summary>The teacher folder for <paramref name="settings"/>, building it first when it is not cached.</summary>
    public static string EnsureBuilt(string dataRoot, string cacheRoot, TeacherSettings settings, Action<string> log, CancellationToken cancellation)
    {
        var folder = Path.Combine(cacheRoot, "teacher-" + settings.CacheKey());
        if (File.Exists(Path.Combine(folder, "done.json")))
        {
            log($"Teacher: cached at {folder}");
            return folder;
        }
        Directory.CreateDirectory(cacheRoot);
        var temp = Path.Combine(cacheRoot, $"tmp-teacher-{settings.CacheKey()}-{Environment.ProcessId}");
        if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        Directory.CreateDirectory(temp);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var corpus = Corpus(dataRoot, settings, log);
        long words = corpus.Sum(t => (long)t.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length);
        log($"Teacher corpus: {corpus.Count:N0} documents, {words:N0} words.");
        int every = Math.Max(1, corpus.Count / settings.TokenizerTexts);
        var tokenizer = ByteLevelBpeTrainer.Train(corpus.Where((_, i) => i % every == 0), settings.VocabSize, temp);
        log($"Tokenizer: {tokenizer.VocabSize} tokens ({clock.Elapsed.TotalSeconds:F0} s).");

        var config = new TeacherConfig
        {
            ModelType = "llama", VocabSize = tokenizer.VocabSize, HiddenSize = settings.HiddenSize, IntermediateSize = settings.IntermediateSize,
            NumLayers = settings.Layers, NumHeads = settings.Heads, NumKeyValueHeads = settings.Heads, HeadDim = settings.HiddenSize / settings.Heads,
            MaxPositions = settings.MaxPositions, TieWordEmbeddings = true, BosTokenId = tokenizer.BosId, EosTokenIds = [tokenizer.EosId!.Value],
            PadTokenId = tokenizer.PadId,
        };
        using var model = TeacherModel.Create(config, tokenizer, settings.Seed);
        var lastLog = DateTime.MinValue;
        var progress = new SynchronousProgress(p =>
        {
            if (DateTime.UtcNow - lastLog < TimeSpan.FromSeconds(20) && p.Step != p.TotalSteps) return;
            lastLog = DateTime.UtcNow;
            log(string.Create(CultureInfo.InvariantCulture, $"  pretrain {p.Step}/{p.TotalSteps} loss {p.Metrics.GetValueOrDefault("smoothedLoss"):F3} ({clock.Elapsed.TotalSeconds:F0} s)"));
        });
        var trainer = new TeacherPretrainer(new MLContext(seed: settings.Seed), new TeacherPretrainerOptions
        {
            Steps = settings.Steps, BatchSize = settings.BatchSize, SequenceLength = settings.SequenceLength, LearningRate = settings.LearningRate,
            WarmupSteps = Math.Max(1, settings.Steps / 20), Seed = settings.Seed,
        });
        double loss = trainer.Train(model, corpus, progress, cancellation);
        model.SaveCheckpoint(temp);
        var done = new
        {
            settings, parameters = model.ParameterCount, contentHash = model.ContentHash, finalLoss = loss, documents = corpus.Count, words,
            seconds = clock.Elapsed.TotalSeconds, builtUtc = DateTime.UtcNow,
        };
        File.WriteAllText(Path.Combine(temp, "done.json"), JsonSerializer.Serialize(done, new JsonSerializerOptions { WriteIndented = true }));
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        Directory.Move(temp, folder);
        log(string.Create(CultureInfo.InvariantCulture, $"Teacher: {model.ParameterCount:N0} parameters, final loss {loss:F3}, built in {clock.Elapsed.TotalMinutes:F1} min → {folder}"));
        return folder;
    }

    /// <summary>
    /// The unlabeled pretraining texts: SST-2 train.tsv sentences, MRPC train.tsv sentence pairs, RTE train.tsv
    /// sentence pairs, CB and BoolQ train32.jsonl premises/hypotheses/passages/questions (labels are never read),
    /// then <see cref="TeacherSettings.CorpusParts"/> parts of imdb-unsup and wikipedia-en-2015. No dev or test file is opened.
    /// </summary>
    public static List<string> Corpus(string dataRoot, TeacherSettings settings, Action<string>? log = null)
    {
        var texts = new List<string>();
        void Add(string source, IEnumerable<string> items)
        {
            int before = texts.Count;
            texts.AddRange(items.Select(t => t.Trim()).Where(t => t.Length > 0));
            log?.Invoke($"  corpus {source}: {texts.Count - before:N0} texts");
        }
        Add("SST-2/train.tsv", TsvColumns(Path.Combine(dataRoot, "SST-2", "train.tsv"), "sentence"));
        Add("MRPC/train.tsv", TsvColumns(Path.Combine(dataRoot, "MRPC", "train.tsv"), "#1 String", "#2 String"));
        Add("RTE/train.tsv", TsvColumns(Path.Combine(dataRoot, "RTE", "train.tsv"), "sentence1", "sentence2"));
        Add("CB/train32.jsonl", JsonlFields(Path.Combine(dataRoot, "CB", "train32.jsonl"), "premise", "hypothesis"));
        Add("BoolQ/train32.jsonl", JsonlFields(Path.Combine(dataRoot, "BoolQ", "train32.jsonl"), "passage", "question"));
        foreach (var name in new[] { "imdb-unsup", "wikipedia-en-2015" })
        {
            var dir = Path.Combine(dataRoot, "corpora", name);
            if (!Directory.Exists(dir) || settings.CorpusParts <= 0) continue;
            foreach (var part in Directory.GetFiles(dir, "part-*.txt").Order(StringComparer.Ordinal).Take(settings.CorpusParts))
                Add($"corpora/{name}/{Path.GetFileName(part)}", File.ReadLines(part));
        }
        // Interleave sources deterministically so a tokenizer sample and pretraining windows see every domain.
        var rng = new Random(settings.Seed);
        return texts.OrderBy(_ => rng.Next()).ToList();
    }

    private static IEnumerable<string> TsvColumns(string path, params string[] columns)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Teacher corpus file not found: '{path}'.", path);
        using var reader = new StreamReader(path);
        var header = (reader.ReadLine() ?? "").TrimStart('\uFEFF').Split('\t');
        var indices = columns.Select(c => Array.IndexOf(header, c) is var i and >= 0 ? i
            : throw new InvalidDataException($"{path}: column '{c}' not found in header [{string.Join(", ", header)}].")).ToArray();
        while (reader.ReadLine() is { } line)
        {
            var fields = line.Split('\t');
            foreach (var i in indices)
                if (i < fields.Length) yield return fields[i];
        }
    }

    private static IEnumerable<string> JsonlFields(string path, params string[] fields)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Teacher corpus file not found: '{path}'.", path);
        foreach (var line in File.ReadLines(path))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            using var doc = JsonDocument.Parse(line);
            foreach (var f in fields)
                if (doc.RootElement.TryGetProperty(f, out var v) && v.ValueKind == JsonValueKind.String) yield return v.GetString()!;
        }
    }
}

/// <summary>IProgress that reports on the calling thread (Progress&lt;T&gt; would post to the thread pool).</summary>
public sealed class SynchronousProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value) => report(value);
}
