using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using Microsoft.ML;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Student;
using RetriKT.Samples.Data;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Teacher;

namespace RetriKT.Evaluation;

/// <summary>The rows of the results table, in display order.</summary>
public static class Rows
{
    public const string Majority = "majority";
    public const string MlNetFeaturizeText = "mlnet-featurizetext";
    public const string FewShotStudent = "fewshot-student";
    public const string Teacher = "teacher-prompted";
    public const string StoreOnlyStudent = "store-only-student";
    public const string RetriKT = "retrikt";
    public const string RetriKTPpo = "retrikt-ppo";
    /// <summary>The <see cref="RetriKTPpo"/> row's store (soft prompt + PPO) without retrieval: what retrieval adds on that store.</summary>
    public const string StoreOnlyPpo = "store-only-ppo";
    /// <summary>The <see cref="RetriKT"/> row's store and settings, the student on the frozen all-MiniLM-L6-v2 backbone (22.7M parameters).</summary>
    public const string RetriKTMiniLM = "retrikt-minilm";
    /// <summary>The <see cref="RetriKTMiniLM"/> row without retrieval: whether retrieval adds anything on a pretrained encoder.</summary>
    public const string StoreOnlyMiniLM = "store-only-minilm";
    /// <summary>
    /// The <see cref="FewShotStudent"/>, <see cref="StoreOnlyStudent"/> and <see cref="RetriKT"/> rows with the same
    /// ≤ 2 % student pretrained first on the teacher's unlabeled corpus (masked LM; <see cref="TinyEncoderBuilder"/>).
    /// </summary>
    public const string FewShotMlm = "fewshot-student-mlm";
    public const string StoreOnlyMlm = "store-only-mlm";
    public const string RetriKTMlm = "retrikt-mlm";
    /// <summary>The <see cref="RetriKT"/> row with its mix chosen by bagging (<see cref="MixSelection.BootstrapAverage"/>), on the same store.</summary>
    public const string RetriKTBagged = "retrikt-bagged";
    /// <summary>
    /// The store-only student on the few-shot rows plus <see cref="RetriKTPipelineOptions.DefaultStoreCorpusRows"/>
    /// sentences of in-domain unlabelled text soft-labelled by the teacher, and nothing generated: plain distillation on
    /// unlabelled text, the reference for a team that has such text (<see cref="EvaluationHarness.StoreCorpus"/>).
    /// </summary>
    public const string CorpusStudent = "corpus-student";
    /// <summary>The <see cref="RetriKT"/> row's store and settings with the same teacher-labelled sentences added.</summary>
    public const string RetriKTCorpus = "retrikt-corpus";
    /// <summary>
    /// The <see cref="RetriKT"/> row's trained student (whose head is the <see cref="StoreOnlyStudent"/> model) with the same
    /// teacher-labelled sentences added to its store after training, and its mix chosen again on other such sentences
    /// (<see cref="RetriKTPipelineOptions.StoreCorpusAfterTraining"/>): knowledge that reaches the model only through retrieval.
    /// </summary>
    public const string RetriKTGrown = "retrikt-grown";
    public const string EncoderLogRegMiniLM = "encoder-logreg-minilm";
    public const string EncoderLogRegArcticXs = "encoder-logreg-arcticxs";
    /// <summary>Prefix of the store-size sweep rows (<c>sweep-store-&lt;samples per label&gt;</c>, soft prompt only, retrieval on).</summary>
    public const string StoreSweepPrefix = "sweep-store-";
    /// <summary>Prefix of the neighbour-count sweep rows (<c>sweep-k-&lt;k&gt;</c>, on the <see cref="RetriKT"/> row's store).</summary>
    public const string NeighborSweepPrefix = "sweep-k-";
    /// <summary>
    /// Prefix of the store-size sweep's counterparts without retrieval (<c>sweep-no-retrieval-&lt;samples per label&gt;</c>:
    /// the <see cref="StoreOnlyStudent"/> row's settings on the store of that size), so retrieval's gain can be read per size.
    /// </summary>
    public const string NoRetrievalSweepPrefix = "sweep-no-retrieval-";

    public static IReadOnlyList<string> All { get; } =
        [Majority, MlNetFeaturizeText, EncoderLogRegMiniLM, EncoderLogRegArcticXs, FewShotStudent, Teacher, StoreOnlyStudent, RetriKT, StoreOnlyPpo, RetriKTPpo, StoreOnlyMiniLM, RetriKTMiniLM];

    /// <summary>
    /// Rows tried and not adopted, run on request only (not in the default set or the table): the student on a tiny
    /// encoder pretrained here with masked LM (docs/ENCODERS.md; its results are archived).
    /// </summary>
    public static IReadOnlyList<string> Experiments { get; } = [FewShotMlm, StoreOnlyMlm, RetriKTMlm, RetriKTBagged, CorpusStudent, RetriKTCorpus, RetriKTGrown];

    /// <summary>Rows whose store takes teacher-labelled sentences of the task's in-domain unlabelled text.</summary>
    public static bool UsesStoreCorpus(string row) => row is CorpusStudent or RetriKTCorpus or RetriKTGrown;

    /// <summary>The sweeps of SST-2 seed 13: store size and k (not in the default row set: they are run on request).</summary>
    public static IReadOnlyList<string> Sweeps { get; } =
        [StoreSweepPrefix + "128", StoreSweepPrefix + "512", StoreSweepPrefix + "2048", StoreSweepPrefix + "4096", StoreSweepPrefix + "8192",
         NoRetrievalSweepPrefix + "512", NoRetrievalSweepPrefix + "2048", NoRetrievalSweepPrefix + "8192", NeighborSweepPrefix + "1", NeighborSweepPrefix + "4", NeighborSweepPrefix + "16", NeighborSweepPrefix + "64"];

    public static bool IsKnown(string row) => All.Contains(row) || Sweeps.Contains(row) || Experiments.Contains(row);

    /// <summary>The samples per label a store-size sweep row (with or without retrieval) names; null for other rows.</summary>
    public static int? SweptStoreSize(string row) =>
        row.StartsWith(StoreSweepPrefix, StringComparison.Ordinal) ? int.Parse(row[StoreSweepPrefix.Length..], CultureInfo.InvariantCulture)
        : row.StartsWith(NoRetrievalSweepPrefix, StringComparison.Ordinal) ? int.Parse(row[NoRetrievalSweepPrefix.Length..], CultureInfo.InvariantCulture)
        : null;

    /// <summary>Rows whose student is trained and scored without retrieval (no retrieval loss, λ = μ = 0).</summary>
    public static bool IsWithoutRetrieval(string row) => row is StoreOnlyStudent or StoreOnlyPpo or CorpusStudent or StoreOnlyMlm or StoreOnlyMiniLM || row.StartsWith(NoRetrievalSweepPrefix, StringComparison.Ordinal);

    /// <summary>Rows whose student trains on a knowledge store (every row but the references, the teacher and the few-shot students).</summary>
    public static bool TrainsOnStore(string row) =>
        row is not (Majority or MlNetFeaturizeText or EncoderLogRegMiniLM or EncoderLogRegArcticXs or FewShotStudent or FewShotMlm or Teacher);

    /// <summary>Rows whose store comes from PPO-tuned prompts (the harness's PPO settings apply to them).</summary>
    public static bool UsesPpo(string row) => row is RetriKTPpo or StoreOnlyPpo;

    /// <summary>Rows whose student starts from the task's pretrained tiny encoder.</summary>
    public static bool UsesTinyEncoder(string row) => row is FewShotMlm or StoreOnlyMlm or RetriKTMlm;

    /// <summary>Rows whose student is a pretrained encoder with its own vocabulary (not the tiny student on the teacher's).</summary>
    public static bool UsesBackbone(string row) => row is RetriKTMiniLM or StoreOnlyMiniLM || UsesTinyEncoder(row);

    public static string Title(string row) => row switch
    {
        Majority => "Majority class",
        MlNetFeaturizeText => "ML.NET FeaturizeText + LbfgsMaximumEntropy, few-shot gold only",
        FewShotStudent => "Student, few-shot gold only",
        Teacher => "Teacher, prompted (verbalizer)",
        StoreOnlyStudent => "Student on the RetriKT store, no retrieval (λ = 0)",
        RetriKT => "RetriKT student (soft prompt, no PPO)",
        RetriKTPpo => "RetriKT student (soft prompt + PPO)",
        StoreOnlyPpo => "Student on the PPO store, no retrieval (λ = 0)",
        RetriKTMiniLM => "RetriKT student on frozen all-MiniLM-L6-v2 (soft prompt, no PPO)",
        StoreOnlyMiniLM => "Student on frozen all-MiniLM-L6-v2, on the RetriKT store, no retrieval (λ = 0)",
        FewShotMlm => "Student pretrained on unlabeled text (masked LM), few-shot gold only",
        StoreOnlyMlm => "Student pretrained on unlabeled text, on the RetriKT store, no retrieval (λ = 0)",
        RetriKTMlm => "RetriKT student pretrained on unlabeled text (soft prompt, no PPO)",
        RetriKTBagged => "RetriKT student, mix chosen by bagging (soft prompt, no PPO)",
        CorpusStudent => "Student on teacher-labelled unlabelled text, nothing generated, no retrieval (λ = 0)",
        RetriKTCorpus => "RetriKT student, store + teacher-labelled unlabelled text (soft prompt, no PPO)",
        RetriKTGrown => "RetriKT student, teacher-labelled unlabelled text added to its store after training (soft prompt, no PPO)",
        EncoderLogRegMiniLM => "Frozen all-MiniLM-L6-v2 + logistic regression, few-shot gold only",
        EncoderLogRegArcticXs => "Frozen arctic-embed-xs + logistic regression, few-shot gold only",
        _ when row.StartsWith(StoreSweepPrefix, StringComparison.Ordinal) => $"RetriKT, {row[StoreSweepPrefix.Length..]} samples per label",
        _ when row.StartsWith(NeighborSweepPrefix, StringComparison.Ordinal) => $"RetriKT, k = {row[NeighborSweepPrefix.Length..]}",
        _ when row.StartsWith(NoRetrievalSweepPrefix, StringComparison.Ordinal) => $"Store only (λ = 0), {row[NoRetrievalSweepPrefix.Length..]} samples per label",
        _ => row,
    };

    public static bool NeedsTeacher(string row) => row is not (Majority or MlNetFeaturizeText) && !EncoderBaselines.Handles(row);
}

/// <summary>One finished (task, seed, row) measurement: a line of the results JSONL.</summary>
public sealed record RowResult
{
    public string Task { get; init; } = "";
    public int? Seed { get; init; }
    public string Row { get; init; } = "";
    /// <summary>Hash of everything that shapes this row's number (teacher content hash, pipeline options); a change re-runs it.</summary>
    public string ConfigKey { get; init; } = "";
    /// <summary>
    /// Key of the split files the row read (<see cref="EvaluationHarness.DataKeyOf"/>): the config key does not name the
    /// data. Null in rows recorded before results named their data (<see cref="EvaluationHarness.MeasuredDataKeys"/>).
    /// </summary>
    public string? DataKey { get; init; }
    public double Accuracy { get; init; }
    public double MacroF1 { get; init; }
    public double? PositiveF1 { get; init; }
    public int TestRows { get; init; }
    public long? TeacherParameters { get; init; }
    public long? StudentParameters { get; init; }
    public long? PromptParameters { get; init; }
    public int? StoreSize { get; init; }
    public double? RetrievalWeight { get; init; }
    /// <summary>μ: weight of term-match retrieval in the student's prediction (null for rows without it).</summary>
    public double? LexicalRetrievalWeight { get; init; }
    public double? FewShotDevAccuracy { get; init; }
    /// <summary>
    /// Share of the store's generated samples whose teacher label (argmax of the soft label) is the intended label; null
    /// where none was measured (rows without extraction, or an extraction that counted no sample), shown as "–" and left
    /// out of the fidelity goal's means rather than counted as 0 %.
    /// </summary>
    public double? StoreFidelity { get; init; }
    public string? Notes { get; init; }
    public double Seconds { get; init; }
    public DateTime FinishedUtc { get; init; }

    public string Key => ResultsLog.KeyOf(Task, Seed, Row, ConfigKey);
}

/// <summary>
/// The resumable results file: one JSON line per finished (task, seed, row, config). A row already in the file is
/// skipped on re-run; each line is appended and flushed when its row finishes, so killing the run loses at most the
/// row in progress. A line that is not a result (torn by a kill mid-write, or damaged) is ignored on read, and named
/// in <see cref="Ignored"/> so that run and report warn about it; its row runs again. Appends from several harness
/// processes are serialized through a lock file beside the results (<c>results.jsonl.lock</c>).
/// </summary>
public sealed class ResultsLog
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = false };
    private readonly Dictionary<string, RowResult> _results = new(StringComparer.Ordinal);
    private readonly List<string> _ignored = [];

    public ResultsLog(string path)
    {
        Path = System.IO.Path.GetFullPath(path);
        var read = ReadFile();
        foreach (var result in read.Records) _results[result.Key] = result;
        _ignored.AddRange(read.Ignored);
    }

    // A JSON object of another shape ({}, a run record, a row of null) deserializes to a result of empty or null task and
    // row: it was kept without a word, and a null row stopped the report with a stack trace.
    private JsonLinesContent<RowResult> ReadFile() =>
        JsonLines.Read(Path, line => JsonSerializer.Deserialize<RowResult>(line, Json) switch
        {
            { } result when string.IsNullOrEmpty(result.Task) || string.IsNullOrEmpty(result.Row) => throw new JsonException("no Task or no Row"),
            var result => result,
        }, "a result", "its row is not in the report and runs again");

    public string Path { get; }

    public IReadOnlyCollection<RowResult> Results => _results.Values;

    /// <summary>One warning per line that was not a result (file, line number, why).</summary>
    public IReadOnlyList<string> Ignored => _ignored;

    public static string KeyOf(string task, int? seed, string row, string configKey)
        => $"{task}|{seed?.ToString(CultureInfo.InvariantCulture) ?? "-"}|{row}|{configKey}";

    public bool Contains(string task, int? seed, string row, string configKey) => _results.ContainsKey(KeyOf(task, seed, row, configKey));

    /// <summary>The result recorded for the row, or null.</summary>
    public RowResult? Find(string task, int? seed, string row, string configKey) => _results.GetValueOrDefault(KeyOf(task, seed, row, configKey));

    /// <summary>
    /// Reads the file again for results that other processes appended since (their warnings were given when this log was
    /// read): a run on another cache that shares the results file finishes rows this one then skips.
    /// </summary>
    public void Refresh()
    {
        foreach (var result in ReadFile().Records) _results.TryAdd(result.Key, result);
    }

    public void Append(RowResult result)
    {
        JsonLines.Append(Path, JsonSerializer.Serialize(result, Json));
        _results[result.Key] = result;
    }

    /// <summary>The folder beside the results file that holds one claim file per row being run (<see cref="TryClaim"/>).</summary>
    public string ClaimFolder => Path + ".running";

    /// <summary>
    /// Claims a row for this process while it runs, or returns null when another harness process sharing this results
    /// file holds it. Two runs on two caches that reached the same row together both ran it: reading the file again
    /// (<see cref="Refresh"/>) only sees rows already finished. The claim is the operating system's exclusive lock on
    /// a file named by the row's key in <see cref="ClaimFolder"/>, released when the process ends, even when killed.
    /// The holder appends the row's result before it lets go, so a run that gets the claim next must read the file again
    /// (<see cref="Refresh"/>, <see cref="Contains"/>) before running the row.
    /// </summary>
    public IDisposable? TryClaim(string task, int? seed, string row, string configKey)
    {
        Directory.CreateDirectory(ClaimFolder);
        string name = KeyHash.Of(KeyOf(task, seed, row, configKey));
        string path = System.IO.Path.Combine(ClaimFolder, name + ".lock");
        try { return new RowClaim(new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None), path); }
        catch (IOException) { return null; }
    }

    /// <summary>A held row claim; disposing deletes the file, then lets go of it.</summary>
    private sealed class RowClaim(FileStream held, string path) : IDisposable
    {
        public void Dispose()
        {
            // Deleted while still held, so no second process can lock this file after it is gone. One that opened it just
            // before gets a lock on a file nobody else can open; it then reads the results file and finds the row.
            try { File.Delete(path); } catch (IOException) { }
            held.Dispose();
        }
    }
}

/// <summary>
/// Appends to the harness's JSON-lines files (results, runs, teachers), which several harness processes may share.
/// .NET's FileMode.Append writes at the length seen at open (no O_APPEND), so two processes appending at once would
/// overwrite each other's line: the end is found and written under an exclusive lock of a lock file beside the file
/// (not of the file itself, which readers open with a shared lock).
/// </summary>
public static class JsonLines
{
    /// <summary>
    /// The records of a JSON-lines file (none when it is not there), in file order. A line that is not a record (torn
    /// by a kill mid-write, damaged, or JSON of another shape) is skipped and named in
    /// <see cref="JsonLinesContent{T}.Ignored"/>: "<c>file line N: not <paramref name="what"/> (why), ignored: <paramref name="consequence"/></c>".
    /// </summary>
    /// <param name="parse">One line to its record; null or a <see cref="JsonException"/> when the line is not one.</param>
    public static JsonLinesContent<T> Read<T>(string path, Func<string, T?> parse, string what, string consequence) where T : class
    {
        var records = new List<T>();
        var ignored = new List<string>();
        if (!File.Exists(path)) return new(records, ignored);
        int number = 0;
        foreach (var line in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string? why = null;
            try
            {
                if (parse(line) is { } record) records.Add(record);
                else why = "JSON null";
            }
            catch (JsonException e) { why = e.Message; }
            if (why is not null) ignored.Add($"{path} line {number}: not {what} ({why}), ignored: {consequence}");
        }
        return new(records, ignored);
    }

    public static void Append(string path, string line) => AppendUnless(path, line, present: null);

    /// <summary>
    /// Appends <paramref name="line"/> unless a line already in the file satisfies <paramref name="present"/>, checked
    /// under the lock: two processes recording the same thing at once record it once. Whether the line was appended.
    /// </summary>
    public static bool AppendUnless(string path, string line, Func<string, bool>? present)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
        using var lockFile = AcquireLock(path + ".lock");
        if (present is not null && File.Exists(path) && File.ReadLines(path).Any(present)) return false;
        using var stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite);
        // A last line without its newline was torn by a process killed mid-write (appends hold the lock) and can never be
        // a record, since no prefix of a JSON object is JSON: it is cut off, or it would sit in the middle of the file
        // for good, warned about on every read and failing readers that take each line as JSON (../shared/tools/transfer-goals).
        // A whole record without its newline (an edited file) is kept, and this line starts on a fresh line after it.
        bool needsNewline = false;
        if (stream.Length > 0 && LastLineWithoutNewline(stream) is { } last)
        {
            if (IsJson(last.Bytes)) needsNewline = true;
            else stream.SetLength(last.Start);
        }
        stream.Seek(0, SeekOrigin.End);
        stream.Write(new UTF8Encoding(false).GetBytes((needsNewline ? "\n" : "") + line + "\n"));
        stream.Flush(flushToDisk: true);
        return true;
    }

    /// <summary>Where the last line starts and its bytes, when the file does not end with a newline; null when it does.</summary>
    private static (long Start, byte[] Bytes)? LastLineWithoutNewline(FileStream stream)
    {
        stream.Seek(-1, SeekOrigin.End);
        if (stream.ReadByte() == '\n') return null;
        var chunk = new byte[4096];
        long start = -1;
        for (long end = stream.Length; start < 0 && end > 0; end -= chunk.Length)
        {
            int count = (int)Math.Min(chunk.Length, end);
            stream.Seek(end - count, SeekOrigin.Begin);
            stream.ReadExactly(chunk, 0, count);
            int newline = Array.LastIndexOf(chunk, (byte)'\n', count - 1, count);
            if (newline >= 0) start = end - count + newline + 1;
        }
        start = Math.Max(start, 0); // one line, and no newline in the file
        var bytes = new byte[stream.Length - start];
        stream.Seek(start, SeekOrigin.Begin);
        stream.ReadExactly(bytes);
        return (start, bytes);
    }

    private static bool IsJson(byte[] line)
    {
        try
        {
            using var _ = JsonDocument.Parse(line);
            return true;
        }
        catch (JsonException) { return false; }
    }

    private static FileStream AcquireLock(string path)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            try { return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
            catch (IOException) when (waited.Elapsed < TimeSpan.FromMinutes(1)) { Thread.Sleep(10); }
        }
    }
}

/// <summary>A JSON-lines file's records, and one warning per line that was not a record (file, line number, why).</summary>
public sealed record JsonLinesContent<T>(IReadOnlyList<T> Records, IReadOnlyList<string> Ignored);

/// <summary>What a harness run does.</summary>
public sealed record HarnessSettings
{
    public required string DataRoot { get; init; }
    public required IReadOnlyList<string> Tasks { get; init; }
    /// <summary>LM-BFF seeds (FewGLUE tasks have one fixed split and ignore them).</summary>
    public required IReadOnlyList<int> Seeds { get; init; }
    public IReadOnlyList<string> Rows { get; init; } = Evaluation.Rows.All;
    public required string ResultsPath { get; init; }
    public string? WorkDirectory { get; init; }
    /// <summary>Pipeline options of the RetriKT rows (PpoSteps is set per row: 0, then <see cref="PpoSteps"/>).</summary>
    public RetriKTPipelineOptions Pipeline { get; init; } = DefaultPipeline();
    /// <summary>
    /// PPO iterations of the <c>retrikt-ppo</c> row. At the library's rate (0.003, 16 rollouts per iteration) PPO
    /// barely moves the stage-1 prompts; at 0.03 without a trust region it collapsed two of five SST-2 seeds' prompts
    /// into empty samples. With the trust region (<c>SoftPromptPpoOptions.MaxUpdateKl</c>), 20 iterations of 64 rollouts
    /// at 0.03 lifted the intended-label share by about 4 points on the seeds tried (docs/RESULTS.md, seventh session).
    /// </summary>
    public int PpoSteps { get; init; } = DefaultPpoSteps;
    public const int DefaultPpoSteps = 20;
    /// <summary>PPO's Adam rate in the <c>retrikt-ppo</c> row (the trust region halves it after an overshoot).</summary>
    public double PpoLearningRate { get; init; } = DefaultPpoLearningRate;
    public const double DefaultPpoLearningRate = 0.03;
    /// <summary>Rollouts per PPO iteration in the <c>retrikt-ppo</c> row: 16 gave too noisy an advantage to follow.</summary>
    public int PpoRolloutsPerStep { get; init; } = DefaultPpoRolloutsPerStep;
    public const int DefaultPpoRolloutsPerStep = 64;

    /// <summary>Fields the harness sets per row, with the option that sets them (a <c>--set</c> of one would be overwritten).</summary>
    private static readonly Dictionary<string, string> PerRowFields = new(StringComparer.Ordinal)
    {
        [nameof(RetriKTPipelineOptions.PpoSteps)] = "--ppo-steps", [nameof(RetriKTPipelineOptions.PpoLearningRate)] = "--ppo-rate",
        [nameof(RetriKTPipelineOptions.RolloutsPerStep)] = "--ppo-rollouts", [nameof(RetriKTPipelineOptions.WorkDirectory)] = "--cache",
        [nameof(RetriKTPipelineOptions.StoreCorpus)] = StoreCorpusRows, [nameof(RetriKTPipelineOptions.StoreCorpusAfterTraining)] = StoreCorpusRows,
    };

    private const string StoreCorpusRows = $"--rows {Evaluation.Rows.CorpusStudent}, {Evaluation.Rows.RetriKTCorpus} or {Evaluation.Rows.RetriKTGrown}";

    /// <summary>The harness defaults with <paramref name="overrides"/> (field name → value) applied; unknown names fail.</summary>
    public static RetriKTPipelineOptions PipelineWith(IReadOnlyDictionary<string, string> overrides)
    {
        var o = DefaultPipeline();
        foreach (var (name, value) in overrides)
        {
            if (PerRowFields.TryGetValue(name, out var option))
                throw new ArgumentException($"--set {name}={value}: the harness sets {name} per row; use {option} instead.");
            // Instance fields only: the public constants beside them (DefaultStoreCorpusRows, ...) cannot be set.
            var field = typeof(RetriKTPipelineOptions).GetField(name, BindingFlags.Public | BindingFlags.Instance)
                ?? throw new ArgumentException($"--set: RetriKTPipelineOptions has no field '{name}'. Fields: " +
                    $"{string.Join(", ", typeof(RetriKTPipelineOptions).GetFields(BindingFlags.Public | BindingFlags.Instance).Select(f => f.Name))}.");
            var type = Nullable.GetUnderlyingType(field.FieldType) ?? field.FieldType;
            try { field.SetValue(o, type.IsEnum ? ParseEnum(type, value) : Convert.ChangeType(value, type, CultureInfo.InvariantCulture)); }
            catch (Exception e) when (e is FormatException or InvalidCastException or OverflowException)
            {
                throw new ArgumentException($"--set {name}={value}: expected a {type.Name}" +
                    (type.IsEnum ? $" ({string.Join(", ", Enum.GetNames(type))})." : "."), e);
            }
        }
        // Out of range, contradicting each other, or a corpus path that is not there: one line naming the setting.
        try { o.Validate(); }
        catch (Exception e) when (e is ArgumentException or FileNotFoundException) { throw new ArgumentException("--set: " + e.Message, e); }
        return o;
    }

    // Names only: a number would set a value the enum does not define.
    private static object ParseEnum(Type type, string value) =>
        Enum.GetNames(type).FirstOrDefault(n => n == value) is { } name ? Enum.Parse(type, name) : throw new FormatException($"'{value}' is not a {type.Name}.");

    /// <summary>The harness's pipeline: the library's <see cref="RetriKTPipelineOptions.EvaluatedRecipe"/> (its doc says why each setting).</summary>
    public static RetriKTPipelineOptions DefaultPipeline() => RetriKTPipelineOptions.EvaluatedRecipe();

    /// <summary>
    /// The retrieval-loss weight of the few-shot and pretrained-encoder students, whose rows were measured with the
    /// library's default; the tiny store students train without it and have retrieval added to the store-only model
    /// (<see cref="DefaultPipeline"/>: no retrieval loss, the epoch chosen on the head, the mix tuned once after training).
    /// </summary>
    public const double MeasuredRetrievalLossWeight = 1.0;
}

/// <summary>Runs every pending (task, seed, row) and appends each result to the <see cref="ResultsLog"/>.</summary>
/// <param name="locateTinyEncoder">The task's pretrained tiny encoder folder (built on first use), for the <c>*-mlm</c> rows.</param>
public sealed class EvaluationHarness(HarnessSettings settings, Func<string, (TeacherModel Teacher, string Path)> loadTeacher, Action<string> log,
    Func<string, string>? locateTinyEncoder = null)
{
    private string _task = "";

    /// <summary>How many rows ran and how many were already in the results file.</summary>
    public (int Ran, int Skipped) Run(CancellationToken cancellation = default)
    {
        var results = new ResultsLog(settings.ResultsPath);
        foreach (var warning in results.Ignored) log("Warning: " + warning);
        int ran = 0, skipped = 0;
        foreach (var taskName in settings.Tasks)
        {
            bool fewGlue = taskName is "CB" or "BoolQ";
            _task = taskName;
            foreach (var seed in fewGlue ? [settings.Seeds[0]] : settings.Seeds)
            {
                FewShotTask? task = null;
                string? dataKey = null;
                foreach (var row in settings.Rows)
                {
                    cancellation.ThrowIfCancellationRequested();
                    int? taskSeed = fewGlue ? null : seed;
                    string configKey = ConfigKey(row);
                    using var claim = results.TryClaim(taskName, taskSeed, row, configKey);
                    if (claim is null)
                    {
                        skipped++;
                        log($"[{taskName} seed {taskSeed?.ToString() ?? "-"}] {row}: another harness process sharing {results.Path} is running it, skipped");
                        continue;
                    }
                    results.Refresh(); // rows finished meanwhile by another run sharing the file are skipped, not run twice
                    task ??= FewShotBenchmarks.Load(settings.DataRoot, taskName, seed); // a missing or damaged file is named here, before its key is taken
                    dataKey ??= DataKeyOf(settings.DataRoot, taskName, seed);
                    CheckRecordedData(results, taskName, taskSeed, seed, dataKey);
                    if ((results.Find(taskName, taskSeed, row, configKey) ?? results.Find(taskName, taskSeed, row, ConfigKey(row, withCachePath: true))) is { } done)
                    {
                        // The key names the settings and the teacher, not the data: a test split of another size is other data,
                        // whose rows would sit in one report beside these. (The data keys checked above see any change in a
                        // split the harness knows the measured keys of; this still catches an older row of another split.)
                        if (done.TestRows > 0 && done.TestRows != task.Test.Count)
                            throw new InvalidDataException($"{results.Path}: {taskName} seed {taskSeed?.ToString() ?? "-"} {row} was measured on {done.TestRows} test rows, " +
                                                           $"but the test split under {settings.DataRoot} has {task.Test.Count}: results of other data; give this data its own --results file.");
                        skipped++;
                        log($"[{taskName} seed {taskSeed?.ToString() ?? "-"}] {row}: already in {results.Path}, skipped");
                        continue;
                    }
                    log($"[{taskName} seed {taskSeed?.ToString() ?? "-"}] {row}: running (train {task.Train.Count}, dev {task.Dev.Count}, test {task.Test.Count})");
                    var clock = Stopwatch.StartNew();
                    var result = (EncoderBaselines.Handles(row) ? EncoderBaselines.Run(task, row, seed, RowProgress(), cancellation) : RunRow(task, row, cancellation)) with
                    {
                        Task = taskName, Seed = taskSeed, Row = row, ConfigKey = configKey, DataKey = dataKey, Seconds = clock.Elapsed.TotalSeconds, FinishedUtc = DateTime.UtcNow,
                    };
                    results.Append(result);
                    ran++;
                    string f1 = result.PositiveF1 is double f ? FormattableString.Invariant($", F1 {f:P2}") : "";
                    log(FormattableString.Invariant(
                        $"[{taskName} seed {taskSeed?.ToString() ?? "-"}] {row}: accuracy {result.Accuracy:P2}, macro-F1 {result.MacroF1:P2}{f1} ({result.Seconds:F0} s){(result.Notes is null ? "" : "; " + result.Notes)}"));
                }
            }
        }
        return (ran, skipped);
    }

    /// <summary>The data key of the split files a row of <paramref name="task"/> and <paramref name="seed"/> reads (<see cref="KeyHash.OfFiles"/>: names, sizes, SHA-256).</summary>
    public static string DataKeyOf(string dataRoot, string task, int seed)
    {
        var (train, dev, test) = FewShotBenchmarks.SplitFiles(dataRoot, task, seed);
        return KeyHash.OfFiles(dataRoot, [train, dev, test]);
    }

    /// <summary>
    /// The data key of each split ("task|seed", "-" for FewGLUE's one split) of ../shared/data as its SHA256SUMS lists it:
    /// the data the results recorded before results named their data (<see cref="RowResult.DataKey"/> null) were
    /// measured on, so that such rows keep their place on that data and are refused on other data.
    /// </summary>
    public static IReadOnlyDictionary<string, string> MeasuredDataKeys { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["SST-2|13"] = "f0c6ae3a2e8ab3db", ["SST-2|21"] = "94c49a9d4466f831", ["SST-2|42"] = "c0b2373c40adae4a", ["SST-2|87"] = "6f99c60ab7a7ca70", ["SST-2|100"] = "9e12cbe61c125c19",
        ["MRPC|13"] = "7b04ac24615b1723", ["MRPC|21"] = "fb2fc778b3a67d74", ["MRPC|42"] = "69c36dda3e7f03b2", ["MRPC|87"] = "2d01ae58b852a44b", ["MRPC|100"] = "f756e5c5681ef994",
        ["RTE|13"] = "17d4bcf9146ca4a1", ["RTE|21"] = "83fe0a9b8a712885", ["RTE|42"] = "70a0bb3d629404b5", ["RTE|87"] = "e2e5a6e68b66449d", ["RTE|100"] = "8f78caf46f4a2068",
        ["CB|-"] = "ab37f255c4721b35", ["BoolQ|-"] = "a04f8c2645e6370b",
    };

    /// <summary>
    /// Refuses a results file whose rows of this split were measured on other data: a row's config key names its settings
    /// and teacher, not its data, so after an edit of a data file (or with another --data) a finished row was skipped and
    /// reported beside rows of the new data. Every recorded row of the split is checked, not only the row about to run.
    /// </summary>
    private void CheckRecordedData(ResultsLog results, string task, int? taskSeed, int seed, string dataKey)
    {
        string split = $"{task}|{taskSeed?.ToString(CultureInfo.InvariantCulture) ?? "-"}";
        foreach (var r in results.Results.Where(r => r.Task == task && r.Seed == taskSeed))
        {
            if ((r.DataKey ?? MeasuredDataKeys.GetValueOrDefault(split)) is not { } recorded || recorded == dataKey) continue;
            var (train, dev, test) = FewShotBenchmarks.SplitFiles(settings.DataRoot, task, seed);
            string files = string.Join(", ", new[] { train, dev, test }.Select(f => Path.GetRelativePath(settings.DataRoot, f).Replace('\\', '/')));
            throw new InvalidDataException($"{results.Path}: {task} seed {taskSeed?.ToString(CultureInfo.InvariantCulture) ?? "-"} {r.Row} was measured on data {recorded}" +
                                           (r.DataKey is null ? " (recorded before results named their data: ../shared/data as its SHA256SUMS lists it)" : "") +
                                           $", but {files} under {settings.DataRoot} are data {dataKey}: results of other data; give this data its own --results file.");
        }
    }

    /// <summary>The config part of <paramref name="row"/>'s key on <paramref name="task"/> (what <see cref="Run"/> looks for in the results file).</summary>
    public string ConfigKeyOf(string task, string row, bool withCachePath = false)
    {
        // The key's parts read the current task, as they do for each task in Run; the harness's own task is put back.
        var current = _task;
        _task = task;
        try { return ConfigKey(row, withCachePath); }
        finally { _task = current; }
    }

    /// <summary>
    /// The config part of a row's key: the teacher's content hash and the options that shape the row. The cache folder
    /// (<c>WorkDirectory</c>, where checkpoints go) shapes nothing, so it is left out; rows measured before it was
    /// (<paramref name="withCachePath"/>) keyed it, and <see cref="Run"/> still finds them under the cache they ran with.
    /// </summary>
    private string ConfigKey(string row, bool withCachePath = false)
    {
        if (row == Rows.Majority) return "none";
        if (row == Rows.MlNetFeaturizeText) return MlNetBaseline.ConfigKey;
        if (EncoderBaselines.Handles(row)) return EncoderBaselines.ConfigKey(row);
        var teacher = Teacher();
        var json = new JsonSerializerOptions { IncludeFields = true };
        var o = Options(row);
        if (!withCachePath) o.WorkDirectory = null;
        string options = row switch
        {
            // v2: the one-pass verbalizer (single-token label words) and length-sorted scoring; probabilities move by ~1e-6.
            Rows.Teacher => "verbalizer-v2",
            // v6: the student starts from the teacher's vocabulary and token embeddings (StudentEmbeddingsFromTeacher).
            Rows.FewShotStudent => "student-v6|" + JsonSerializer.Serialize(StudentOptions(o), json),
            Rows.FewShotMlm => FormattableString.Invariant($"student-mlm-v1|{TinyEncoderName()}|{TinyEncoderFineTuneRate}|") + JsonSerializer.Serialize(StudentOptions(o), json),
            // The PPO store's key carries PPO's version (v7: the trust region; v8: the one-pass verbalizer), as the retrikt-ppo row's does.
            Rows.StoreOnlyPpo => "store-only-ppo-v8|" + JsonSerializer.Serialize(o, json),
            Rows.StoreOnlyMlm => $"store-only-mlm-v1|{TinyEncoderName()}|" + JsonSerializer.Serialize(o, json),
            Rows.RetriKTMlm => $"retrikt-mlm-v1|{TinyEncoderName()}|" + JsonSerializer.Serialize(o, json),
            Rows.CorpusStudent or Rows.RetriKTCorpus => FormattableString.Invariant($"{row}-v1|{CorpusName(StoreCorpus(row)!)} {o.StoreCorpusRows}|") + JsonSerializer.Serialize(o, json),
            // v2: the tuning rows come from other documents than the added sentences (v1 drew both from one draw of sentences).
            Rows.RetriKTGrown => FormattableString.Invariant($"{row}-v2|{CorpusName(StoreCorpus(row)!)} {o.StoreCorpusRows} {o.StoreCorpusTuningRows}|") + JsonSerializer.Serialize(o, json),
            Rows.StoreOnlyMiniLM => $"store-only-minilm-v1|{MiniLM.PackageId} {MiniLM.Version}|" + JsonSerializer.Serialize(o, json),
            _ when Rows.IsWithoutRetrieval(row) => "store-only-v2|" + JsonSerializer.Serialize(o, json),
            // v2: the store of the seed unification (as retrikt-v5); v1 numbers were measured on the store before it.
            Rows.RetriKTMiniLM => $"retrikt-minilm-v2|{MiniLM.PackageId} {MiniLM.Version}|" + JsonSerializer.Serialize(o, json),
            // v6: PPO's reward gives a sample under MinWords no fidelity or diversity; the v5 rows were measured before.
            // v7: PPO's trust region (an update past MaxUpdateKl is undone and the rate halved); it is code, not an option.
            // v8: PPO's reward reads the one-pass verbalizer; its ~1e-6 differences change the tuned prompts' bits, so the
            // PPO store is generated again (its extraction checkpoint's fingerprint no longer matches).
            Rows.RetriKTPpo => "retrikt-ppo-v8|" + JsonSerializer.Serialize(o, json),
            _ => "retrikt-v5|" + JsonSerializer.Serialize(o, json),
        };
        // The few-shot students' keys hash a subset of the options (StudentOptions); the rule that chooses their mix on
        // the few-shot dev split is keyed when it is not the default, so the rows measured under the default keep their keys.
        if (row is Rows.FewShotStudent or Rows.FewShotMlm && o.StudentMixSelection != default) options += "|mix " + o.StudentMixSelection;
        // A pretrained backbone reads a pair with token type 1 for its second text since 2026-12-06 (all 0 before): the
        // pair tasks' backbone rows are keyed anew, so they run again; one-text tasks (SST-2) compute the same and keep theirs.
        if (row is Rows.StoreOnlyMiniLM or Rows.RetriKTMiniLM && FewShotBenchmarks.Describe(_task).Template.IsPair) options += "|pair-token-types";
        // Stores built since 2026-12-06 differ from the ones the table's rows were measured on: a sample dropped over quota
        // is no longer remembered by the duplicate filter, no variant repeats its sample, variants count words as the
        // length filter does, the fluency filter reads a second part after its space, and PPO's turn over the labels runs
        // on across iterations (3-label tasks). The store rows are keyed anew, so they run again.
        if (Rows.TrainsOnStore(row)) options += "|stores-2026-12-06";
        // A pair's variants vary its second (generated) text since 2026-12-07, its first before: pair rows with variants
        // are keyed anew, so they run again; one-text tasks vary the same text and keep theirs.
        if (Rows.TrainsOnStore(row) && o.StoreVariantsPerSample > 0 && FewShotBenchmarks.Describe(_task).Template.IsPair) options += "|pair-variants-second-text";
        // A tuning corpus (--set TuningCorpus=…) is a path, left out of the options' JSON; its folder name keys the rows that tune on it.
        if (o.TuningCorpus is { } corpus) options += "|tuning-corpus " + CorpusName(corpus);
        return KeyHash.Of(teacher.Teacher.ContentHash + "|" + options);
    }

    /// <summary>The options that shape a student trained without a store (the few-shot row's key).</summary>
    private static object StudentOptions(RetriKTPipelineOptions p) => new
    {
        p.StudentEpochs, p.StudentHiddenSize, p.StudentLayers, p.StudentMaxLength, p.StudentNeighborCount, p.StudentFeedForwardSize,
        p.StudentMaxVocabulary, p.StudentCharacterPieces, p.StudentTokenDropout, p.StudentRetrievalLossWeight, p.TuneOnFewShotDev, p.Seed,
        p.StudentEmbeddingsFromTeacher, p.StudentEmbeddingRank,
    };

    /// <summary>How a store student was trained and chosen, where it differs from the library's defaults (the paired student, the tuning corpus).</summary>
    private static string TrainingNote(RetriKTPipelineOptions o, bool useRetrieval) =>
        (useRetrieval && o.StudentRetrievalLossWeight == 0 && o.StudentSelectEpochOnHead
            ? "retrieval added to the store-only model (no retrieval loss, epoch chosen on the head); " : "") +
        (o.FewShotDevMixShare is double mixShare
            ? FormattableString.Invariant($"mix tuned with the few-shot dev rows' share of the weight at {mixShare:G3} (the epoch at {o.FewShotDevTuningShare ?? RetriKTPipelineOptions.DefaultFewShotDevTuningShare:G3}); ")
            : "") +
        (o.TuningCorpus is { } corpus
            ? FormattableString.Invariant($"tuning rows include {o.TuningCorpusRows ?? RetriKTPipelineOptions.DefaultTuningCorpusRows} teacher-labelled sentences of {CorpusName(corpus)}; ")
            : "");

    /// <summary>A tuning corpus's name in keys and notes: its folder (or file) name, without the machine's path.</summary>
    private static string CorpusName(string path) => Path.GetFileName(Path.TrimEndingDirectorySeparator(path));

    private static string CorpusNote(RetriKTPipelineOptions o, int entries) => o.StoreCorpus is not { } corpus ? ""
        : o.StoreCorpusAfterTraining
            ? FormattableString.Invariant($"teacher-labelled sentences of {CorpusName(corpus)} added to the trained student's store {entries} (of {o.StoreCorpusRows} drawn), mix chosen again on {o.StoreCorpusTuningRows} others; ")
            : FormattableString.Invariant($"teacher-labelled sentences of {CorpusName(corpus)} in the student's store {entries} (of {o.StoreCorpusRows} drawn; {o.StoreValidationShare:P0} of them held out with the generated rows); ");

    private static string VariantNote(int variants) =>
        variants == 0 ? "" : FormattableString.Invariant($"teacher-labelled variants in the student's store {variants}; ");

    /// <summary>The current task's tiny encoder folder (its name carries the recipe's hash, so it keys the rows that use it); located once per task.</summary>
    private string TinyEncoder()
    {
        if (_tinyEncoders.TryGetValue(_task, out var folder)) return folder;
        var locate = locateTinyEncoder ?? throw new InvalidOperationException(
            "The *-mlm rows need the pretrained tiny encoder, and this harness was built without a way to locate it.");
        return _tinyEncoders[_task] = locate(_task);
    }

    private readonly Dictionary<string, string> _tinyEncoders = new(StringComparer.Ordinal);

    private string TinyEncoderName() => Path.GetFileName(TinyEncoder());

    /// <summary>AdamW rate of the tiny encoder's layers while the student trains (the trainer's 2e-5 default is for MiniLM-sized encoders).</summary>
    public const double TinyEncoderFineTuneRate = 5e-4;

    /// <summary>The pipeline options of a row: the harness's, with the row's PPO steps, store size or k, and its student's encoder.</summary>
    private RetriKTPipelineOptions Options(string row)
    {
        var o = settings.Pipeline.Clone();
        if (Rows.UsesPpo(row)) (o.PpoSteps, o.PpoLearningRate, o.RolloutsPerStep) = (settings.PpoSteps, settings.PpoLearningRate, settings.PpoRolloutsPerStep);
        else o.PpoSteps = 0;
        if (Rows.SweptStoreSize(row) is int samplesPerLabel) o.SamplesPerLabel = samplesPerLabel;
        if (row.StartsWith(Rows.NeighborSweepPrefix, StringComparison.Ordinal))
            o.StudentNeighborCount = int.Parse(row[Rows.NeighborSweepPrefix.Length..], CultureInfo.InvariantCulture);
        if (row is Rows.RetriKTMiniLM or Rows.StoreOnlyMiniLM) o.StudentBackbone = MiniLM.Locate();
        if (row == Rows.RetriKTBagged) o.StudentMixSelection = MixSelection.BootstrapAverage;
        o.StoreCorpus = StoreCorpus(row);
        o.StoreCorpusAfterTraining = row == Rows.RetriKTGrown;
        // Named in the row's options, so its key says which rule chose the mix (null would read as the lowest-NLL rows' key).
        if (row == Rows.RetriKTGrown) o.StoreCorpusMixSelection ??= RetriKTPipelineOptions.DefaultStoreCorpusMixSelection;
        if (Rows.UsesTinyEncoder(row))
        {
            // Every layer fine-tunes: the tiny encoder knows the language, not the task (its embeddings stay as pretrained).
            o.StudentBackbone = TinyEncoder();
            o.StudentTrainableBackboneLayers = TinyEncoderBuilder.Options().Layers;
            o.StudentBackboneLearningRate = TinyEncoderFineTuneRate;
        }
        // A pretrained encoder brings its own vocabulary and embeddings; early stopping is the tiny student's (the
        // pipeline leaves it off with a backbone), so those rows keep their keys.
        // The paired retrieval student (no retrieval loss, epoch chosen on the head) is the tiny store students' setting,
        // where it was measured; the few-shot and backbone students keep the retrieval loss they were measured with
        // (HarnessSettings.MeasuredRetrievalLossWeight), and with it their keys. A TuningCorpus comes only from --set
        // (on SST-2 it changed nothing at 4,096 samples per label and kept a worse epoch at 512; docs/RESULTS.md).
        if (Rows.UsesBackbone(row) || !Rows.TrainsOnStore(row))
            (o.StudentRetrievalLossWeight, o.StudentSelectEpochOnHead) = (HarnessSettings.MeasuredRetrievalLossWeight, false);
        if (Rows.UsesBackbone(row)) (o.StudentEmbeddingsFromTeacher, o.StudentEmbeddingRank, o.StudentEarlyStoppingPatience) = (false, 0, 0);
        o.WorkDirectory = settings.WorkDirectory;
        return o;
    }

    /// <summary>
    /// The in-domain unlabelled text of a <see cref="Rows.UsesStoreCorpus"/> row (null for other rows): for SST-2 the
    /// critics' movie reviews of <c>corpora/movie-reviews-polarity-v2</c>, the text nearest SST-2's Rotten Tomatoes
    /// sentences among the corpora (none of them holds a GLUE file; their README's overlap check). The stand-in teacher
    /// read it, unlabelled, in its stage-A pretraining, as an LLM would have read such text.
    /// </summary>
    public string? StoreCorpus(string row) => !Rows.UsesStoreCorpus(row) ? null
        : _task == "SST-2" ? Path.Combine(settings.DataRoot, "corpora", "movie-reviews-polarity-v2")
        : throw new ArgumentException($"Row {row} needs in-domain unlabelled text; the harness has it for SST-2 only, found task {_task}.");

    /// <summary>
    /// The store a row trains on, extracted once per (task, seed, extraction settings) and shared by the rows that use
    /// it: <c>retrikt</c>, <c>store-only-student</c> and the k sweep train on one and the same store.
    /// </summary>
    private StoreExtraction Store(RetriKTPipeline pipeline, FewShotTask task, IProgress<TrainingProgress> progress, CancellationToken cancellation)
    {
        var o = pipeline.Options;
        string key = FormattableString.Invariant($"{task.Name}|{task.Seed}|{o.PpoSteps}|{o.PpoLearningRate}|{o.RolloutsPerStep}|{o.PpoMaxUpdateKl}|{o.SamplesPerLabel}|{Teacher().Teacher.ContentHash}");
        if (_stores.TryGetValue(key, out var cached)) return cached;
        var store = pipeline.ExtractStore(task, progress, cancellation);
        _stores[key] = store;
        return store;
    }

    private readonly Dictionary<string, StoreExtraction> _stores = new(StringComparer.Ordinal);

    /// <summary>The current task's teacher (the loader caches it; each task has its own stand-in teacher).</summary>
    private (TeacherModel Teacher, string Path) Teacher() => loadTeacher(_task);

    private static PretrainedEncoderPackage MiniLM => PretrainedEncoderPackage.MiniLM;

    /// <summary>
    /// The backbone row is not a RetriKT-sized student of the stand-in teacher, and says so: 22.7M parameters are
    /// ≤ 1 % of an LLM from ~2.3B parameters up, the teams this option is for, but several times a 5.8M teacher.
    /// </summary>
    private static string BackboneNote(string row, double ratio) => row is not (Rows.RetriKTMiniLM or Rows.StoreOnlyMiniLM) ? ""
        : string.Create(CultureInfo.InvariantCulture, $"frozen all-MiniLM-L6-v2 backbone ({MiniLM.PackageId} {MiniLM.Version}), counted in the student's parameters: " +
            $"{(ratio <= 0.02 ? "within" : "NOT within")} 2 % of this teacher (the option is for teams whose teacher is a real LLM); ");

    /// <summary>
    /// What each part of a retrieval student scores on its own on the test split, and a few fixed mixes (logged):
    /// for reading only; λ and μ are chosen on validation rows, never here. It answers "does retrieval know something
    /// the head does not" separately from "did the tuning find the mix".
    /// </summary>
    private string ComponentNote(MLContext mlContext, FewShotTask task, RetrievalClassifierTransformer student)
    {
        bool terms = student.LexicalNeighborCount > 0;
        // Each part is scored once and the grid mixes them as the model does (RetrievalMix, the student's own float
        // steps), instead of one pass over the test split per grid point: a frozen-encoder student re-embeds the split
        // on every pass (30 of retrikt-minilm's 32 min on BoolQ).
        var testView = FewShotTask.ToDataView(mlContext, task.Test);
        float[][] PartScores(double lambda, double mu)
        {
            using var part = student.WithRetrievalWeight(lambda, mu);
            return mlContext.Data.CreateEnumerable<ScoreColumn>(part.Transform(testView), reuseRowObject: false).Select(r => r.Score).ToArray();
        }
        var head = PartScores(0, 0);
        var knn = PartScores(1, 0);
        var termMatch = terms ? PartScores(0, 1) : null;
        var labelOrder = task.Labels.ToList();
        var gold = task.Test.Select(r => labelOrder.IndexOf(r.Label)).ToArray();
        double Accuracy(double lambda, double mu)
        {
            int right = 0, labels = task.Labels.Count;
            var mixed = new float[labels];
            for (int row = 0; row < gold.Length; row++)
            {
                RetrievalMix.Combine(head[row], knn[row], termMatch is null ? head[row] : termMatch[row], lambda, mu, mixed);
                if (RetrievalMix.ArgMax(mixed) == gold[row]) right++;
            }
            return (double)right / gold.Length;
        }
        var grid = new Dictionary<(double Lambda, double Mu), double>();
        foreach (double lambda in new[] { 0, 0.25, 0.5, 0.75, 1 })
            foreach (double mu in terms ? new[] { 0, 0.25, 0.5, 0.75, 1 } : [0.0])
                if (lambda + mu <= 1 + 1e-9) grid[(lambda, mu)] = Accuracy(lambda, mu);
        log("    test-split accuracy per fixed mix (reading only): " +
            string.Join("; ", grid.Select(g => FormattableString.Invariant($"λ {g.Key.Lambda:G2} μ {g.Key.Mu:G2}: {100 * g.Value:F1}"))));
        // The parts alone are corners of the grid: (0, 0) the head, (1, 0) embedding retrieval, (0, 1) term match. The
        // grid's best point bounds what a better choice of the mix could have given this student (on this grid).
        var best = grid.MaxBy(g => g.Value);
        return FormattableString.Invariant($"test split, parts alone (reading only): head {100 * grid[(0, 0)]:F1} %, embedding retrieval {100 * grid[(1, 0)]:F1} %") +
               (terms ? FormattableString.Invariant($", term match {100 * grid[(0, 1)]:F1} %") : "") +
               FormattableString.Invariant($", best fixed mix λ {best.Key.Lambda:G2} μ {best.Key.Mu:G2}: {100 * best.Value:F1} %; ");
    }

    /// <summary>A row's progress lines: the stage and its steps, at most every 30 s.</summary>
    private SynchronousProgress RowProgress() => SynchronousProgress.Every(TimeSpan.FromSeconds(30), p => log($"    {p.Stage} {p.Step}/{p.TotalSteps}"));

    private RowResult RunRow(FewShotTask task, string row, CancellationToken cancellation)
    {
        if (row == Rows.Majority)
        {
            var m = RetriKTPipeline.EvaluateMajority(task);
            return new RowResult { Accuracy = m.Accuracy, MacroF1 = m.MacroF1, PositiveF1 = m.PositiveF1, TestRows = m.Rows };
        }
        if (row == Rows.MlNetFeaturizeText)
        {
            var m = MlNetBaseline.Evaluate(task, settings.Pipeline.Seed);
            return new RowResult { Accuracy = m.Accuracy, MacroF1 = m.MacroF1, PositiveF1 = m.PositiveF1, TestRows = m.Rows, Notes = MlNetBaseline.Description };
        }
        var (teacher, path) = Teacher();
        var mlContext = new MLContext(seed: settings.Pipeline.Seed);
        // Warnings and errors reach the log (a moved-aside extraction checkpoint, a label short of its quota), and so do
        // the student's per-epoch validation scores and the epoch it keeps (early stopping); the rest of the library's
        // messages are the progress lines below.
        mlContext.Log += (_, e) =>
        {
            if (e.Kind is Microsoft.ML.Runtime.ChannelMessageKind.Warning or Microsoft.ML.Runtime.ChannelMessageKind.Error)
                log($"    {e.Kind} ({e.Source}): {e.RawMessage}");
            else if (e.RawMessage.Contains("validation NLL", StringComparison.Ordinal))
                log($"    {e.RawMessage}");
        };
        var pipeline = new RetriKTPipeline(mlContext, teacher, path, Options(row));
        var progress = RowProgress();
        switch (row)
        {
            case Rows.Teacher:
            {
                var (t, calibrated) = pipeline.EvaluateTeacher(task, progress, cancellation);
                return new RowResult
                {
                    Accuracy = t.Accuracy, MacroF1 = t.MacroF1, PositiveF1 = t.PositiveF1, TestRows = t.Rows, TeacherParameters = teacher.ParameterCount,
                    Notes = calibrated ? "calibrated (chosen on few-shot dev)" : "uncalibrated (chosen on few-shot dev)",
                };
            }
            case Rows.FewShotStudent or Rows.FewShotMlm:
            {
                var (t, studentParameters) = pipeline.EvaluateFewShotStudent(task, progress, cancellation);
                return new RowResult
                {
                    Accuracy = t.Accuracy, MacroF1 = t.MacroF1, PositiveF1 = t.PositiveF1, TestRows = t.Rows,
                    TeacherParameters = teacher.ParameterCount, StudentParameters = studentParameters,
                };
            }
            case Rows.CorpusStudent:
            {
                // No extraction: the store is the few-shot rows, to which the pipeline adds the teacher-labelled sentences.
                using var trained = pipeline.TrainStudent(task, StoreExtraction.FewShotRows(task), useRetrieval: false, progress, cancellation);
                double ratio = (double)trained.Student.ParameterCount / teacher.ParameterCount;
                return new RowResult
                {
                    Accuracy = trained.Test.Accuracy, MacroF1 = trained.Test.MacroF1, PositiveF1 = trained.Test.PositiveF1, TestRows = trained.Test.Rows,
                    TeacherParameters = teacher.ParameterCount, StudentParameters = trained.Student.ParameterCount, FewShotDevAccuracy = trained.FewShotDevAccuracy,
                    StoreSize = task.Train.Count + trained.StoreCorpusEntries,
                    Notes = string.Create(CultureInfo.InvariantCulture,
                        $"student/teacher parameters {ratio:P2}; {TrainingNote(pipeline.Options, false)}{CorpusNote(pipeline.Options, trained.StoreCorpusEntries)}nothing generated; student {trained.TrainTime.TotalSeconds:F0} s"),
                };
            }
            case Rows.StoreOnlyStudent or Rows.StoreOnlyPpo:
            case Rows.RetriKT or Rows.RetriKTCorpus or Rows.RetriKTGrown or Rows.RetriKTPpo or Rows.RetriKTMiniLM or Rows.StoreOnlyMiniLM or Rows.StoreOnlyMlm or Rows.RetriKTMlm or Rows.RetriKTBagged:
            case var sweep when Rows.Sweeps.Contains(sweep):
            {
                var extraction = Store(pipeline, task, progress, cancellation);
                bool useRetrieval = !Rows.IsWithoutRetrieval(row);
                using var trained = pipeline.TrainStudent(task, extraction, useRetrieval, progress, cancellation);
                var r = pipeline.Describe(task, extraction, trained);
                string components = (useRetrieval ? ComponentNote(mlContext, task, trained.Student) : "") + TrainingNote(pipeline.Options, useRetrieval);
                return new RowResult
                {
                    Accuracy = r.Test.Accuracy, MacroF1 = r.Test.MacroF1, PositiveF1 = r.Test.PositiveF1, TestRows = r.Test.Rows,
                    TeacherParameters = r.TeacherParameters, StudentParameters = r.StudentParameters, PromptParameters = r.PromptParameters,
                    StoreSize = r.StoreSize, RetrievalWeight = r.RetrievalWeight, LexicalRetrievalWeight = r.LexicalRetrievalWeight, FewShotDevAccuracy = r.FewShotDevAccuracy,
                    StoreFidelity = r.Extraction.IntendedLabelShare,
                    Notes = string.Create(CultureInfo.InvariantCulture,
                        $"{BackboneNote(row, r.ParameterRatio)}student/teacher parameters {r.ParameterRatio:P2}; {components}extraction: {r.Extraction}; {VariantNote(trained.StoreVariants)}{CorpusNote(pipeline.Options, trained.StoreCorpusEntries)}times: prompts {r.Timings.SoftPrompts.TotalSeconds:F0} s, extraction {r.Timings.Extraction.TotalSeconds:F0} s, student {r.Timings.Student.TotalSeconds:F0} s"),
                };
            }
            default:
                throw new ArgumentException($"Unknown row '{row}'. Known: {string.Join(", ", Rows.All.Concat(Rows.Sweeps).Concat(Rows.Experiments))}.");
        }
    }
}

/// <summary>The Score column of a scored row (label distribution in the task's label order).</summary>
internal sealed class ScoreColumn
{
    public float[] Score { get; set; } = [];
}
