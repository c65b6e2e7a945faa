using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.ML;
using RetriKT.MLNet.Data;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Teacher;

namespace RetriKT.Evaluation;

/// <summary>The rows of the results table, in display order.</summary>
public static class Rows
{
    public const string Majority = "majority";
    public const string FewShotStudent = "fewshot-student";
    public const string Teacher = "teacher-prompted";
    public const string RetriKT = "retrikt";
    public const string RetriKTPpo = "retrikt-ppo";
    public const string EncoderLogRegMiniLM = "encoder-logreg-minilm";
    public const string EncoderLogRegArcticXs = "encoder-logreg-arcticxs";

    public static IReadOnlyList<string> All { get; } = [Majority, FewShotStudent, Teacher, RetriKT, RetriKTPpo, EncoderLogRegMiniLM, EncoderLogRegArcticXs];

    public static string Title(string row) => row switch
    {
        Majority => "Majority class",
        FewShotStudent => "Student, few-shot gold only",
        Teacher => "Teacher, prompted (verbalizer)",
        RetriKT => "RetriKT student (soft prompt, no PPO)",
        RetriKTPpo => "RetriKT student (soft prompt + PPO)",
        EncoderLogRegMiniLM => "Frozen all-MiniLM-L6-v2 + logistic regression",
        EncoderLogRegArcticXs => "Frozen arctic-embed-xs + logistic regression",
        _ => row,
    };

    public static bool NeedsTeacher(string row) => row != Majority && !EncoderBaselines.Handles(row);
}

/// <summary>One finished (task, seed, row) measurement: a line of the results JSONL.</summary>
public sealed record RowResult
{
    public string Task { get; init; } = "";
    public int? Seed { get; init; }
    public string Row { get; init; } = "";
    /// <summary>Hash of everything that shapes this row's number (teacher content hash, pipeline options); a change re-runs it.</summary>
    public string ConfigKey { get; init; } = "";
    public double Accuracy { get; init; }
    public double MacroF1 { get; init; }
    public double? PositiveF1 { get; init; }
    public int TestRows { get; init; }
    public long? TeacherParameters { get; init; }
    public long? StudentParameters { get; init; }
    public long? PromptParameters { get; init; }
    public int? StoreSize { get; init; }
    public double? RetrievalWeight { get; init; }
    public double? FewShotDevAccuracy { get; init; }
    public string? Notes { get; init; }
    public double Seconds { get; init; }
    public DateTime FinishedUtc { get; init; }

    public string Key => ResultsLog.KeyOf(Task, Seed, Row, ConfigKey);
}

/// <summary>
/// The resumable results file: one JSON line per finished (task, seed, row, config). A row already in the file is
/// skipped on re-run; each line is appended and flushed when its row finishes, so killing the run loses at most the
/// row in progress. A torn last line (a kill mid-write) is ignored on read and the row runs again.
/// </summary>
public sealed class ResultsLog
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = false };
    private readonly Dictionary<string, RowResult> _results = new(StringComparer.Ordinal);

    public ResultsLog(string path)
    {
        Path = System.IO.Path.GetFullPath(path);
        if (!File.Exists(Path)) return;
        foreach (var line in File.ReadLines(Path))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            RowResult? result;
            try { result = JsonSerializer.Deserialize<RowResult>(line, Json); }
            catch (JsonException) { continue; } // torn line from an interrupted write
            if (result is not null) _results[result.Key] = result;
        }
    }

    public string Path { get; }

    public IReadOnlyCollection<RowResult> Results => _results.Values;

    public static string KeyOf(string task, int? seed, string row, string configKey)
        => $"{task}|{seed?.ToString(CultureInfo.InvariantCulture) ?? "-"}|{row}|{configKey}";

    public bool Contains(string task, int? seed, string row, string configKey) => _results.ContainsKey(KeyOf(task, seed, row, configKey));

    public void Append(RowResult result)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
        // A previous torn line must not swallow this one: start on a fresh line.
        bool needsNewline = File.Exists(Path) && new FileInfo(Path).Length > 0 && LastByte(Path) != '\n';
        using (var stream = new FileStream(Path, FileMode.Append, FileAccess.Write, FileShare.Read))
        using (var writer = new StreamWriter(stream, new UTF8Encoding(false)))
        {
            if (needsNewline) writer.Write('\n');
            writer.Write(JsonSerializer.Serialize(result, Json));
            writer.Write('\n');
            writer.Flush();
            stream.Flush(flushToDisk: true);
        }
        _results[result.Key] = result;
    }

    private static int LastByte(string path)
    {
        using var s = File.OpenRead(path);
        s.Seek(-1, SeekOrigin.End);
        return s.ReadByte();
    }
}

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
    public int PpoSteps { get; init; } = 6;

    public static RetriKTPipelineOptions DefaultPipeline() => new()
    {
        PromptTokens = 8, SupervisedEpochs = 10, RolloutsPerStep = 16, SamplesPerLabel = 64, MaxAttemptsFactor = 3,
        StudentEpochs = 30, StudentMaxLength = 128, Seed = 1,
    };
}

/// <summary>Runs every pending (task, seed, row) and appends each result to the <see cref="ResultsLog"/>.</summary>
public sealed class EvaluationHarness(HarnessSettings settings, Func<(TeacherModel Teacher, string Path)> loadTeacher, Action<string> log)
{
    private (TeacherModel Teacher, string Path)? _teacher;

    /// <summary>How many rows ran and how many were already in the results file.</summary>
    public (int Ran, int Skipped) Run(CancellationToken cancellation = default)
    {
        var results = new ResultsLog(settings.ResultsPath);
        int ran = 0, skipped = 0;
        foreach (var taskName in settings.Tasks)
        {
            bool fewGlue = taskName is "CB" or "BoolQ";
            foreach (var seed in fewGlue ? [settings.Seeds[0]] : settings.Seeds)
            {
                FewShotTask? task = null;
                foreach (var row in settings.Rows)
                {
                    cancellation.ThrowIfCancellationRequested();
                    int? taskSeed = fewGlue ? null : seed;
                    string configKey = ConfigKey(row);
                    if (results.Contains(taskName, taskSeed, row, configKey))
                    {
                        skipped++;
                        log($"[{taskName} seed {taskSeed?.ToString() ?? "-"}] {row}: already in {results.Path}, skipped");
                        continue;
                    }
                    task ??= FewShotBenchmarks.Load(settings.DataRoot, taskName, seed);
                    log($"[{taskName} seed {taskSeed?.ToString() ?? "-"}] {row}: running (train {task.Train.Count}, dev {task.Dev.Count}, test {task.Test.Count})");
                    var clock = Stopwatch.StartNew();
                    var result = (EncoderBaselines.Handles(row) ? EncoderBaselines.Run(task, row, seed) : RunRow(task, row, cancellation)) with
                    {
                        Task = taskName, Seed = taskSeed, Row = row, ConfigKey = configKey, Seconds = clock.Elapsed.TotalSeconds, FinishedUtc = DateTime.UtcNow,
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

    /// <summary>The config part of a row's key: the teacher's content hash and the options that shape the row.</summary>
    private string ConfigKey(string row)
    {
        if (EncoderBaselines.Handles(row)) return EncoderBaselines.ConfigKey(row);
        if (!Rows.NeedsTeacher(row)) return "none";
        var teacher = Teacher();
        var p = settings.Pipeline;
        string options = row switch
        {
            Rows.Teacher => "verbalizer-v1",
            Rows.FewShotStudent => $"student-v1|{p.StudentEpochs}|{p.StudentHiddenSize}|{p.StudentLayers}|{p.StudentMaxLength}|{p.TuneOnFewShotDev}|{p.Seed}",
            _ => "retrikt-v1|" + JsonSerializer.Serialize(Options(row), new JsonSerializerOptions { IncludeFields = true }),
        };
        var bytes = SHA256.HashData(Encoding.UTF8.GetBytes(teacher.Teacher.ContentHash + "|" + options));
        return Convert.ToHexStringLower(bytes)[..16];
    }

    private RetriKTPipelineOptions Options(string row)
    {
        var p = settings.Pipeline;
        return new RetriKTPipelineOptions
        {
            PromptTokens = p.PromptTokens, SupervisedEpochs = p.SupervisedEpochs, PpoSteps = row == Rows.RetriKTPpo ? settings.PpoSteps : 0,
            RolloutsPerStep = p.RolloutsPerStep, SamplesPerLabel = p.SamplesPerLabel, MaxAttemptsFactor = p.MaxAttemptsFactor,
            FidelityThreshold = p.FidelityThreshold, RequireArgmax = p.RequireArgmax, MaxNewTokens = p.MaxNewTokens, StudentEpochs = p.StudentEpochs,
            StudentHiddenSize = p.StudentHiddenSize, StudentLayers = p.StudentLayers, StudentMaxLength = p.StudentMaxLength,
            TuneOnFewShotDev = p.TuneOnFewShotDev, CalibrateVerbalizer = p.CalibrateVerbalizer, Seed = p.Seed, WorkDirectory = settings.WorkDirectory,
        };
    }

    private (TeacherModel Teacher, string Path) Teacher() => _teacher ??= loadTeacher();

    private RowResult RunRow(FewShotTask task, string row, CancellationToken cancellation)
    {
        if (row == Rows.Majority)
        {
            var m = RetriKTPipeline.EvaluateMajority(task);
            return new RowResult { Accuracy = m.Accuracy, MacroF1 = m.MacroF1, PositiveF1 = m.PositiveF1, TestRows = m.Rows };
        }
        var (teacher, path) = Teacher();
        var mlContext = new MLContext(seed: settings.Pipeline.Seed);
        var pipeline = new RetriKTPipeline(mlContext, teacher, path, Options(row));
        var lastLog = DateTime.MinValue;
        var progress = new SynchronousProgress(p =>
        {
            if (DateTime.UtcNow - lastLog < TimeSpan.FromSeconds(30)) return;
            lastLog = DateTime.UtcNow;
            log($"    {p.Stage} {p.Step}/{p.TotalSteps}");
        });
        switch (row)
        {
            case Rows.Teacher:
            {
                var (t, calibrated) = pipeline.EvaluateTeacher(task);
                return new RowResult
                {
                    Accuracy = t.Accuracy, MacroF1 = t.MacroF1, PositiveF1 = t.PositiveF1, TestRows = t.Rows, TeacherParameters = teacher.ParameterCount,
                    Notes = calibrated ? "calibrated (chosen on few-shot dev)" : "uncalibrated (chosen on few-shot dev)",
                };
            }
            case Rows.FewShotStudent:
            {
                var (t, studentParameters) = pipeline.EvaluateFewShotStudent(task, progress, cancellation);
                return new RowResult
                {
                    Accuracy = t.Accuracy, MacroF1 = t.MacroF1, PositiveF1 = t.PositiveF1, TestRows = t.Rows,
                    TeacherParameters = teacher.ParameterCount, StudentParameters = studentParameters,
                };
            }
            case Rows.RetriKT or Rows.RetriKTPpo:
            {
                var r = pipeline.Run(task, progress, cancellation);
                return new RowResult
                {
                    Accuracy = r.Test.Accuracy, MacroF1 = r.Test.MacroF1, PositiveF1 = r.Test.PositiveF1, TestRows = r.Test.Rows,
                    TeacherParameters = r.TeacherParameters, StudentParameters = r.StudentParameters, PromptParameters = r.PromptParameters,
                    StoreSize = r.StoreSize, RetrievalWeight = r.RetrievalWeight, FewShotDevAccuracy = r.FewShotDevAccuracy,
                    Notes = string.Create(CultureInfo.InvariantCulture,
                        $"extraction: {r.Extraction}; times: prompts {r.Timings.SoftPrompts.TotalSeconds:F0} s, extraction {r.Timings.Extraction.TotalSeconds:F0} s, student {r.Timings.Student.TotalSeconds:F0} s"),
                };
            }
            default:
                throw new ArgumentException($"Unknown row '{row}'. Known: {string.Join(", ", Rows.All)}.");
        }
    }
}
