using System.Diagnostics;
using Microsoft.ML;
using RetriKT.MLNet.Pipeline;
using RetriKT.Samples.Data;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Teacher;
using TorchSharp;

namespace RetriKT.MLNet.Benchmarks.SoftPrompt;

/// <summary>
/// `dotnet run -c Release -- ppo [--quick]`: rollout tokens/s and PPO time per step, split into rollout / reward /
/// scoring / update, for the real stories260K teacher and a ~10M-parameter LLaMA (random weights, GPT-2 BPE
/// vocabulary; speed does not depend on the weights), on SST-2 16-shot seed 13 with the default reward.
/// </summary>
public static class PpoReport
{
    /// <param name="quick">Two PPO steps instead of five.</param>
    /// <param name="storiesOnly">Only the stories260K teacher (skips the ~11M model).</param>
    public static void Run(bool quick, bool storiesOnly = false)
    {
        var shared = BenchPaths.SharedRoot();
        if (BenchArgs.Threads() is { } threads) torch.set_num_threads(threads);
        Console.WriteLine($"torch threads: {torch.get_num_threads()}, cores: {Environment.ProcessorCount}");
        var task = FewShotBenchmarks.Load(Path.Combine(shared, "data"), "SST-2", 13);

        var stories = Path.Combine(shared, "models", "llama2c-stories260K", "stories260K.bin");
        Measure("stories260K (llama2.c, 0.26M)", stories, task, TaskTemplates.Sst2, quick);
        if (storiesOnly) return;

        var dir = Directory.CreateTempSubdirectory("retrikt-ppo-bench-").FullName;
        var gpt2 = Path.Combine(shared, "models", "gpt2-bpe-tokenizer");
        var tokenizer = TeacherTokenizer.FromGpt2Files(Path.Combine(gpt2, "vocab.json"), Path.Combine(gpt2, "merges.txt"));
        var config = new TeacherConfig
        {
            ModelType = "llama", VocabSize = 50257, HiddenSize = 192, IntermediateSize = 512, NumLayers = 4, NumHeads = 6,
            NumKeyValueHeads = 6, HeadDim = 32, MaxPositions = 256, TieWordEmbeddings = true, BosTokenId = 50256, EosTokenIds = [50256],
        };
        using (var model = TeacherModel.Create(config, tokenizer, seed: 1)) model.SaveCheckpoint(dir);
        Measure("LLaMA ~11M (random, GPT-2 BPE)", dir, task, TaskTemplates.Sst2, quick);
    }

    private static void Measure(string name, string teacherPath, FewShotTask task, TaskTemplate template, bool quick)
    {
        var mlContext = new MLContext(seed: 1);
        var data = FewShotTask.ToDataView(mlContext, task.Train);
        var total = Stopwatch.StartNew();
        using var prompts = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = teacherPath, Template = template with { MaxNewTokens = 32 }, SupervisedEpochs = 1,
            PpoSteps = quick ? 2 : 5, RolloutsPerStep = 16, MiniBatchSize = 8, PpoEpochs = 4,
            // Per-step losses and rewards, so that two builds can be checked for the same run (RETRIKT_BENCH_PPO_CSV=folder).
            MetricsCsvPath = Environment.GetEnvironmentVariable("RETRIKT_BENCH_PPO_CSV") is { } folder
                ? Path.Combine(folder, string.Concat(name.TakeWhile(char.IsLetterOrDigit)) + ".csv") : null,
        }).Fit(data);
        var steps = prompts.TrainingReport!.PpoSteps.Skip(1).ToList(); // the first step includes warm-up
        if (steps.Count == 0) steps = prompts.TrainingReport.PpoSteps.ToList();
        double rollout = steps.Average(s => s.RolloutSeconds), reward = steps.Average(s => s.RewardSeconds);
        double scoring = steps.Average(s => s.ScoringSeconds), update = steps.Average(s => s.UpdateSeconds);
        double stepTotal = rollout + reward + scoring + update;
        Console.WriteLine($"\n{name}: {prompts.Teacher.ParameterCount:N0} teacher parameters, {prompts.PromptParameterCount:N0} prompt parameters");
        Console.WriteLine($"  rollout: {steps.Sum(s => s.GeneratedTokens) / steps.Sum(s => s.RolloutSeconds):F1} generated tokens/s " +
                          $"({steps.Average(s => s.GeneratedTokens):F0} tokens per step of 16 rollouts)");
        Console.WriteLine($"  PPO step: {stepTotal:F2} s = rollout {rollout:F2} s ({rollout / stepTotal:P0}) + reward {reward:F2} s ({reward / stepTotal:P0}) " +
                          $"+ scoring {scoring:F2} s ({scoring / stepTotal:P0}) + update {update:F2} s ({update / stepTotal:P0})");
        Console.WriteLine($"  whole fit (stage 1 + {prompts.TrainingReport.PpoSteps.Count} PPO steps): {total.Elapsed.TotalSeconds:F1} s");
        // Two builds learned the same prompts only if these bits agree (the CSV's six digits are not enough).
        Console.WriteLine($"  tuned prompts: sha256 {prompts.ContentHash()[..16]}");
    }
}
