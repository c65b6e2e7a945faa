using System.Diagnostics;
using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Teacher;
using RetriKT.Samples.Data;

// Knowledge added after training reaches a student only through retrieval: does it? On one SST-2 seed the README's
// student is trained on the README example's generated store (cached by the readme-example probe), then its store is
// grown with N corpus sentences soft-labelled by the stand-in teacher (RetrievalClassifierTransformer.WithAddedKnowledge;
// the head is not trained again). The mix is chosen again by RetrievalClassifierTrainer.TuneMix on V sentences of other
// documents of the same corpus, by the teacher's labels (never the scored rows); as a control the same rows retune the student whose
// store did not grow. The best mix on the test split is printed as a reading-only ceiling. The test split is read for
// scoring only. A store too small for term matching (e.g. 128 samples per label) trains a student without a term index;
// growing it builds one, and the student grown without it (termMatchNeighbors: 0) is scored beside it.
// N may be a comma-separated list of sizes (e.g. 32768,131072): the largest is drawn and labelled once, and each size grows
// the store with the first N of those sentences, one output line per size.
//   dotnet run --project docs/evaluation/probes/grown-store -c Release -- <seed> <store cache folder> <corpus folder> <N[,N…]> <V> [samples per label, 2048]
if (args.Length < 5) { Console.Error.WriteLine("usage: <seed> <cache> <corpus> <N> <V> [samples per label]"); return 2; }
int seed = int.Parse(args[0]);
string cacheFolder = args[1], corpus = args[2];
var sizes = args[3].Split(',').Select(int.Parse).Order().ToArray();
int added = sizes[^1], validationRows = int.Parse(args[4]);
int samplesPerLabel = args.Length > 5 ? int.Parse(args[5]) : 2048;
var task = FewShotBenchmarks.Load("../shared/data", "SST-2", seed);
var ml = new MLContext(seed: 1);
IDataView fewShot = FewShotTask.ToDataView(ml, task.Train);
string teacherPath = Directory.GetDirectories("samples/RetriKT.Evaluation/teachers/teacher-SST-2-e1160dddf0fb7a93")[0];
var store = KnowledgeStore.Load(Path.Combine(cacheFolder, $"store-{seed}-{samplesPerLabel}.bin"));
using var teacher = TeacherModel.Load(teacherPath);
var clock = Stopwatch.StartNew();
var vocabulary = TeacherTokenVocabulary.Export(teacher, Path.Combine(cacheFolder, "student-vocabulary"));
var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(fewShot);
RetrievalClassifierTrainer.Options StudentOptions(MixSelection selection) => new()
{
    StoreData = store.ToDataView(ml), StoreValidationShare = 0.1, EarlyStoppingPatience = 3, HiddenSize = 48, FeedForwardSize = 96,
    VocabularyPath = vocabulary.VocabularyPath, TokenEmbeddingsPath = vocabulary.EmbeddingsPath, EmbeddingRank = 16,
    RetrievalLossWeight = 0, SelectEpochOnHead = true, MixSelection = selection,
};
var trainer = ml.MulticlassClassification.Trainers.RetrievalClassifier(StudentOptions(MixSelection.LowestNll));
// The same trainer choosing the most accurate mix on the tuning rows instead of the lowest-NLL one (TuneMix only).
var byAccuracy = ml.MulticlassClassification.Trainers.RetrievalClassifier(StudentOptions(MixSelection.HighestAccuracy));
using var student = trainer.Fit(keys.Transform(fewShot));
double studentSeconds = clock.Elapsed.TotalSeconds;

// N sentences grow the store; V sentences of other documents (reviews) choose the mix, as the pipeline draws them.
var (forStore, forTuning) = CorpusSentences.DrawWithTuningDocuments(corpus, added, validationRows, seed);
var sentences = forStore.Concat(forTuning).ToList();
// In the student's label order (its Label keys'), which may differ from the cached store's.
var labelNames = student.LabelNames;
var scorer = new VerbalizerClassifier(teacher, TaskTemplates.Sst2, labelNames.ToList());
var probabilities = scorer.Probabilities(sentences.Select(t => (t, (string?)null)).ToList());
var addedEntries = Enumerable.Range(0, added).Select(i =>
{
    int label = RetrievalMix.ArgMax(probabilities[i]);
    return new KnowledgeEntry(sentences[i], null, label, probabilities[i], probabilities[i][label], KnowledgeSource.Unlabeled);
}).ToList();
var validationTexts = sentences.Skip(added).ToList();
var validationLabels = probabilities.Skip(added).Select(p => RetrievalMix.ArgMax(p)).ToArray();
double labelSeconds = clock.Elapsed.TotalSeconds - studentSeconds;
var validation = keys.Transform(ml.Data.LoadFromEnumerable(validationTexts.Select((t, i) => new TextRow { Text = t, Label = labelNames[validationLabels[i]] })));
var testTexts = task.Test.Select(r => r.Text).ToList();
var labelIndex = labelNames.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i);
var testLabels = task.Test.Select(r => labelIndex[r.Label]).ToArray();
// The mix is linear in its parts: p = (1 − λ − μ)·p_head + λ·p_knn + μ·p_terms, so score each part once.
float[][][] Parts(RetrievalClassifierTransformer t, List<string> texts)
{
    using var head = t.WithRetrievalWeight(0, 0);
    using var knn = t.WithRetrievalWeight(1, 0);
    var headScores = head.PredictBatch(texts);
    if (t.LexicalNeighborCount == 0) return [headScores, knn.PredictBatch(texts), headScores]; // no term index: μ is 0 throughout
    using var terms = t.WithRetrievalWeight(0, 1);
    return [headScores, knn.PredictBatch(texts), terms.PredictBatch(texts)];
}
double Accuracy(float[][][] parts, int[] labels, double lambda, double mu)
{
    int right = 0;
    for (int i = 0; i < labels.Length; i++)
    {
        int best = 0; double bestScore = double.MinValue;
        for (int c = 0; c < parts[0][i].Length; c++)
        {
            double p = (1 - lambda - mu) * parts[0][i][c] + lambda * parts[1][i][c] + mu * parts[2][i][c];
            if (p > bestScore) { bestScore = p; best = c; }
        }
        if (best == labels[i]) right++;
    }
    return 100.0 * right / labels.Length;
}
double Scored(RetrievalClassifierTransformer t) => 100 * ml.MulticlassClassification.Evaluate(t.Transform(keys.Transform(FewShotTask.ToDataView(ml, task.Test)))).MicroAccuracy;
var grid = (from l in Enumerable.Range(0, 11) from m in Enumerable.Range(0, 11 - l) select (L: l / 10.0, M: m / 10.0)).ToList();
var before = Parts(student, testTexts);
double trainedMix = Accuracy(before, testLabels, student.RetrievalWeight, student.LexicalRetrievalWeight);
double headOnly = Accuracy(before, testLabels, 0, 0);
// Chosen on the V teacher-labelled sentences by the trainer's own rule (TuneMix: lowest NLL, τ too). The control: the
// same rows retune the student whose store did not grow, so a gain from the rows alone shows there.
using var retuned = trainer.TuneMix(student, validation);
double retunedAccuracy = Scored(retuned);
foreach (int size in sizes)
{
    var growClock = Stopwatch.StartNew();
    var addedStore = new KnowledgeStore(labelNames, addedEntries.Take(size));
    using var grown = student.WithAddedKnowledge(addedStore);
    double growSeconds = growClock.Elapsed.TotalSeconds;
    var afterTest = Parts(grown, testTexts);
    double grownTrainedMix = Accuracy(afterTest, testLabels, student.RetrievalWeight, student.LexicalRetrievalWeight);
    using var tuned = trainer.TuneMix(grown, validation);
    // Only for a student trained without a term index: the same growth without building one.
    bool indexBuilt = student.LexicalNeighborCount == 0 && grown.LexicalNeighborCount > 0;
    string withoutIndex = "";
    if (indexBuilt)
    {
        using var grownDense = student.WithAddedKnowledge(addedStore, termMatchNeighbors: 0);
        using var tunedDense = trainer.TuneMix(grownDense, validation);
        withoutIndex = $"\tgrown without a term index, TuneMix (λ {tunedDense.RetrievalWeight:F2}) {Scored(tunedDense):F2}";
    }
    double tunedAccuracy = Scored(tuned);
    // The same choice on the 32 gold few-shot dev rows instead (in-domain, gold, few), and how the parts do on the
    // teacher-labelled tuning rows (where TuneMix looks) against the test split.
    using var tunedGold = trainer.TuneMix(grown, keys.Transform(FewShotTask.ToDataView(ml, task.Dev)));
    using var tunedAccurate = byAccuracy.TuneMix(grown, validation);
    var onTuning = Parts(grown, validationTexts);
    var tuningBest = grid.OrderByDescending(g => Accuracy(onTuning, validationLabels, g.L, g.M)).First();
    string tuningRows = $"\tgrown, TuneMix by accuracy (λ {tunedAccurate.RetrievalWeight:F2} μ {tunedAccurate.LexicalRetrievalWeight:F2}) {Scored(tunedAccurate):F2}" +
                        $"\tfew-shot dev, TuneMix (λ {tunedGold.RetrievalWeight:F2} μ {tunedGold.LexicalRetrievalWeight:F2}) {Scored(tunedGold):F2}" +
                        $"\ton the tuning rows: head {Accuracy(onTuning, validationLabels, 0, 0):F2} knn {Accuracy(onTuning, validationLabels, 1, 0):F2} terms {Accuracy(onTuning, validationLabels, 0, 1):F2}" +
                        $", best accuracy there (λ {tuningBest.L:F1} μ {tuningBest.M:F1}) {Accuracy(onTuning, validationLabels, tuningBest.L, tuningBest.M):F2}, on test {Accuracy(afterTest, testLabels, tuningBest.L, tuningBest.M):F2}";
    var ceiling = grid.OrderByDescending(g => Accuracy(afterTest, testLabels, g.L, g.M)).First();
    Console.WriteLine($"seed {seed}\tstore {samplesPerLabel}/label{(indexBuilt ? ", term index built on growth" : "")}\tadded {size}\tvalidation {validationRows}\thead {headOnly:F2}\ttrained mix (λ {student.RetrievalWeight:F1} μ {student.LexicalRetrievalWeight:F1}) {trainedMix:F2}" +
                      $"\tnot grown, TuneMix (λ {retuned.RetrievalWeight:F2} μ {retuned.LexicalRetrievalWeight:F2}) {retunedAccuracy:F2}" +
                      $"\tgrown, trained mix {grownTrainedMix:F2}\tgrown, TuneMix (λ {tuned.RetrievalWeight:F2} μ {tuned.LexicalRetrievalWeight:F2}) {tunedAccuracy:F2}" +
                      withoutIndex + $"\tgrown, best on test (λ {ceiling.L:F1} μ {ceiling.M:F1}) {Accuracy(afterTest, testLabels, ceiling.L, ceiling.M):F2}" +
                      $"\tparts after: knn {Accuracy(afterTest, testLabels, 1, 0):F2} terms {Accuracy(afterTest, testLabels, 0, 1):F2}" +
                      tuningRows + $"\tstudent {studentSeconds:F0} s label {labelSeconds:F0} s grow {growSeconds:F0} s");
}
return 0;

/// <summary>A validation row: a corpus sentence and the teacher's most probable label.</summary>
internal sealed class TextRow
{
    public string Text { get; set; } = "";
    public string Label { get; set; } = "";
}
