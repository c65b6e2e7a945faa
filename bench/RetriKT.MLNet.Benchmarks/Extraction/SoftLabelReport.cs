using System.Diagnostics;
using RetriKT.Evaluation;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Teacher;
using TorchSharp;

namespace RetriKT.MLNet.Benchmarks.Extraction;

/// <summary>
/// Soft-label time of knowledge extraction, side by side in one process, on the harness's SST-2 stand-in teacher and
/// real SST-2 training sentences, scored as extraction does (one call per generated batch of 64 samples), in rounds
/// that alternate the paths (medians):
/// <list type="bullet">
/// <item>before: one row per (sample, label word), 64 rows per forward pass in sample order, the LM head at every position
/// (what the verbalizer classifier did before the one-pass path; reproduced here through ScoreContinuations);</item>
/// <item>row per word: the classifier's general path today (rows sorted by length, <see cref="TeacherModel.DefaultScoringBatch"/> per pass);</item>
/// <item>one pass: single-token label words, one row per sample, the LM head at its last position only.</item>
/// </list>
/// </summary>
public static class SoftLabelReport
{
    private const int ExtractionBatch = 64;

    public static void Run(bool quick)
    {
        if (BenchArgs.Threads() is { } threads) torch.set_num_threads(threads);
        // The harness's shipped SST-2 teacher, found and checked as the harness does.
        var (teacher, folder) = TeacherBuilder.LoadShipped(BenchPaths.RepoRoot(), "SST-2");
        using var teacherScope = teacher;
        int count = quick ? 512 : 2048, rounds = quick ? 3 : 5;
        // Sentences of the training split in file order, of three or more words (extraction keeps samples of at least three).
        var samples = File.ReadLines(Path.Combine(BenchPaths.SharedRoot(), "data", "SST-2", "train.tsv")).Skip(1)
            .Select(l => l.Split('\t')[0]).Where(t => t.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length >= 3)
            .Take(count).Select(t => (t, (string?)null)).ToList();
        Console.WriteLine($"torch threads: {torch.get_num_threads()}, cores: {Environment.ProcessorCount}; teacher {teacher.Config} ({teacher.ParameterCount:N0} params) at {folder}");
        Console.WriteLine($"{samples.Count} SST-2 training sentences, mean {samples.Average(s => s.t.Split(' ').Length):F1} words; one call per {ExtractionBatch} samples, as extraction makes; {rounds} rounds");
        var template = TaskTemplates.Sst2;
        string[] labels = ["0", "1"];
        var onePass = new VerbalizerClassifier(teacher, template, labels, calibrate: false);
        var rowPerWord = new VerbalizerClassifier(teacher, template, labels, calibrate: false, TeacherModel.DefaultScoringBatch, rowPerWord: true);
        var paths = new (string Name, Func<IReadOnlyList<(string, string?)>, float[][]> Score)[]
        {
            ("before", batch => Before(teacher, template, labels, batch)),
            ("row per word", batch => rowPerWord.Probabilities(batch)),
            ("one pass", batch => onePass.Probabilities(batch)),
        };
        var times = paths.ToDictionary(p => p.Name, _ => new List<double>());
        var results = new Dictionary<string, float[][]>();
        foreach (var (_, score) in paths) score(samples.Take(ExtractionBatch).ToList()); // warm-up
        for (int r = 0; r < rounds; r++)
            foreach (var (name, score) in paths)
            {
                var sw = Stopwatch.StartNew();
                results[name] = samples.Chunk(ExtractionBatch).SelectMany(batch => score(batch)).ToArray();
                times[name].Add(sw.Elapsed.TotalSeconds);
            }
        double Median(List<double> x) { var s = x.Order().ToList(); return s[s.Count / 2]; }
        double before = Median(times["before"]);
        foreach (var (name, _) in paths)
        {
            double t = Median(times[name]);
            double worst = results[name].Zip(results["before"]).Max(p => p.First.Zip(p.Second).Max(x => Math.Abs(x.First - x.Second)));
            Console.WriteLine($"soft labels, {name}: median {t:F2} s = {samples.Count / t:F0} samples/s = {before / t:F2}x before " +
                              $"(rounds: {string.Join(", ", times[name].Select(x => x.ToString("F2")))}); largest difference from before {worst:E2}");
        }
    }

    /// <summary>The classifier's computation before the one-pass path: (sample, word) rows in sample order, 64 rows per pass, softmax over the words.</summary>
    private static float[][] Before(TeacherModel teacher, TaskTemplate template, string[] labels, IReadOnlyList<(string Text, string? Text2)> samples)
    {
        var words = labels.Select(l => template.Verbalizer[l]).ToArray();
        var rows = samples.SelectMany(s => words.Select(w => (template.ClassificationParts(s.Text, s.Text2).Prefix, w))).ToList();
        var scores = rows.Chunk(64).SelectMany(c => teacher.ScoreContinuations(c.Select(r => r.Prefix).ToList(), c.Select(r => r.w).ToList(), batchSize: 64)).ToArray();
        return samples.Select((_, i) =>
        {
            var row = scores.AsSpan(i * words.Length, words.Length).ToArray();
            double max = row.Max(), sum = row.Sum(x => Math.Exp(x - max));
            return row.Select(x => (float)(Math.Exp(x - max) / sum)).ToArray();
        }).ToArray();
    }
}
