using System.Diagnostics;
using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Teacher;
using RetriKT.Samples.Data;

// The README's "Use it" example on SST-2's 16-shot split of one LM-BFF seed, with the harness's shipped stand-in
// teacher, scored on the official dev set. Steps 1-3 are the README's; the store is cached per seed and size, so the
// student settings can be compared on one store. Run from the repository root:
//   dotnet run --project docs/evaluation/probes/readme-example -c Release -- <seed> <samples per label> <mode> <cache folder>
// mode: readme (the README's student), share-only (the README's without the teacher's embeddings, every setting named),
// defaults (RetrievalClassifier(store: store), the catalog's simple overload: since 2026-12-05 the settings of
// share-only), old-defaults (the simple overload's settings before 2026-12-05, named).
if (args.Length != 4) { Console.Error.WriteLine("usage: <seed> <samples per label> <readme|share-only|defaults|old-defaults> <cache folder>"); return 2; }
int seed = int.Parse(args[0]), samplesPerLabel = int.Parse(args[1]);
string mode = args[2], cacheFolder = args[3];
var task = FewShotBenchmarks.Load("../shared/data", "SST-2", seed);
var ml = new MLContext(seed: 1);
IDataView fewShot = FewShotTask.ToDataView(ml, task.Train);
IDataView test = FewShotTask.ToDataView(ml, task.Test);
string teacherPath = Directory.GetDirectories("samples/RetriKT.Evaluation/teachers/teacher-SST-2-e1160dddf0fb7a93")[0];
var clock = Stopwatch.StartNew();
Directory.CreateDirectory(cacheFolder);
string cached = Path.Combine(cacheFolder, $"store-{seed}-{samplesPerLabel}.bin");
IDataView store;
if (File.Exists(cached)) store = KnowledgeStore.Load(cached).ToDataView(ml);
else
{
    var prompts = ml.RetriKT().SoftPromptPpoTrainer(teacherPath: teacherPath, template: TaskTemplates.Sst2).Fit(fewShot);
    var extracted = ml.RetriKT().KnowledgeExtractor(prompts, samplesPerLabel: samplesPerLabel).Fit(fewShot);
    extracted.Store.Save(cached);
    store = extracted.ToDataView(ml);
}
double storeSeconds = clock.Elapsed.TotalSeconds;
var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(fewShot);
RetrievalClassifierTransformer student;
switch (mode)
{
    case "defaults":
        student = ml.MulticlassClassification.Trainers.RetrievalClassifier(store: store).Fit(keys.Transform(fewShot));
        break;
    case "old-defaults":
        student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            StoreData = store, StoreValidationShare = 0, EarlyStoppingPatience = 0, HiddenSize = 64, FeedForwardSize = 256, MaxVocabularySize = 8000,
        }).Fit(keys.Transform(fewShot));
        break;
    case "share-only":
        student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            StoreData = store, StoreValidationShare = 0.1, EarlyStoppingPatience = 3, HiddenSize = 48, FeedForwardSize = 96, MaxVocabularySize = 1400,
        }).Fit(keys.Transform(fewShot));
        break;
    case "readme":
    {
        // The README's step 4, as written.
        using var teacher = TeacherModel.Load(teacherPath);
        var vocabulary = TeacherTokenVocabulary.Export(teacher, Path.Combine(cacheFolder, "student-vocabulary"));
        student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            StoreData = store, VocabularyPath = vocabulary.VocabularyPath, TokenEmbeddingsPath = vocabulary.EmbeddingsPath, EmbeddingRank = 16,
        }).Fit(keys.Transform(fewShot));
        break;
    }
    case var m when m.StartsWith("width-", StringComparison.Ordinal):
    {
        // The table's student (the evaluated recipe's settings: teacher embeddings at rank 16, no retrieval loss, the
        // epoch chosen on the head) at hidden size <n>, FFN 2n; prints the head alone and the tuned mix of the one model.
        // width-<n> or width-<n>-r<rank> (rank 16 unless given)
        var parts = m["width-".Length..].Split("-r");
        int width = int.Parse(parts[0]), rank = parts.Length > 1 ? int.Parse(parts[1]) : 16;
        using var teacher = TeacherModel.Load(teacherPath);
        var vocabulary = TeacherTokenVocabulary.Export(teacher, Path.Combine(cacheFolder, "student-vocabulary"));
        student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            StoreData = store, VocabularyPath = vocabulary.VocabularyPath, TokenEmbeddingsPath = vocabulary.EmbeddingsPath, EmbeddingRank = rank,
            HiddenSize = width, FeedForwardSize = 2 * width, Heads = width % 4 == 0 ? 4 : 2, RetrievalLossWeight = 0, SelectEpochOnHead = true,
        }).Fit(keys.Transform(fewShot));
        using var head = student.WithRetrievalWeight(0);
        var headMetrics = ml.MulticlassClassification.Evaluate(head.Transform(keys.Transform(test)));
        Console.WriteLine($"{mode}\tseed {seed}\thead alone {100 * headMetrics.MicroAccuracy:F2} %\tλ {student.RetrievalWeight:F2} μ {student.LexicalRetrievalWeight:F2}");
        break;
    }
    default: Console.Error.WriteLine($"unknown mode '{mode}'"); return 2;
}
using (student)
{
    var metrics = ml.MulticlassClassification.Evaluate(student.Transform(keys.Transform(test)));
    Console.WriteLine($"{mode}\tseed {seed}\t{samplesPerLabel} per label\taccuracy {100 * metrics.MicroAccuracy:F2} %\t{student.ParameterCount} parameters" +
                      $"\tstore {storeSeconds:F0} s\tstudent {clock.Elapsed.TotalSeconds - storeSeconds:F0} s");
}
return 0;
