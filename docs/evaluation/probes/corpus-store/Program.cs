using System.Diagnostics;
using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Teacher;
using RetriKT.Samples.Data;

// Does real in-domain text, labelled by the teacher, make a better store than generated text alone, and does it give
// retrieval something the head lacks? On one SST-2 seed: the README example's store (cached by the readme-example
// probe), optionally joined by N unlabelled corpus sentences soft-labelled by the stand-in teacher's verbalizer. The
// student is the README's, trained paired (no retrieval loss, epoch chosen on the head), so "head" is the store-only
// student and "mix" is the same model with retrieval. Reads the test split for scoring only.
//   dotnet run --project docs/evaluation/probes/corpus-store -c Release -- <seed> <store cache folder> <corpus folder|none> <N> [replace]
// replace: the store's generated entries are dropped (the few-shot rows stay), so the store is corpus-only.
if (args.Length < 4) { Console.Error.WriteLine("usage: <seed> <cache> <corpus|none> <N> [replace]"); return 2; }
int seed = int.Parse(args[0]);
string cacheFolder = args[1], corpus = args[2];
int corpusRows = int.Parse(args[3]);
bool replace = args.Length > 4 && args[4] == "replace";
var task = FewShotBenchmarks.Load("../shared/data", "SST-2", seed);
var ml = new MLContext(seed: 1);
IDataView fewShot = FewShotTask.ToDataView(ml, task.Train);
IDataView test = FewShotTask.ToDataView(ml, task.Test);
string teacherPath = Directory.GetDirectories("samples/RetriKT.Evaluation/teachers/teacher-SST-2-e1160dddf0fb7a93")[0];
var store = KnowledgeStore.Load(Path.Combine(cacheFolder, $"store-{seed}-2048.bin"));
using var teacher = TeacherModel.Load(teacherPath);
var clock = Stopwatch.StartNew();
var entries = replace ? store.Entries.Where(e => e.Source == KnowledgeSource.FewShot).ToList() : store.Entries.ToList();
if (corpus != "none")
{
    var sentences = CorpusSentences.Draw(corpus, corpusRows, seed);
    var scorer = new VerbalizerClassifier(teacher, TaskTemplates.Sst2, store.LabelNames.ToList());
    var probabilities = scorer.Probabilities(sentences.Select(t => (t, (string?)null)).ToList());
    for (int i = 0; i < sentences.Count; i++)
    {
        var soft = probabilities[i];
        int label = RetrievalMix.ArgMax(probabilities[i]);
        entries.Add(new KnowledgeEntry(sentences[i], null, label, soft, soft[label], KnowledgeSource.Generated));
    }
}
var joined = new KnowledgeStore(store.LabelNames, entries);
double labelSeconds = clock.Elapsed.TotalSeconds;
var vocabulary = TeacherTokenVocabulary.Export(teacher, Path.Combine(cacheFolder, "student-vocabulary"));
var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(fewShot);
using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
{
    StoreData = joined.ToDataView(ml), StoreValidationShare = 0.1, EarlyStoppingPatience = 3, HiddenSize = 48, FeedForwardSize = 96,
    VocabularyPath = vocabulary.VocabularyPath, TokenEmbeddingsPath = vocabulary.EmbeddingsPath, EmbeddingRank = 16,
    RetrievalLossWeight = 0, SelectEpochOnHead = true,
}).Fit(keys.Transform(fewShot));
double Accuracy(RetrievalClassifierTransformer t) => 100 * ml.MulticlassClassification.Evaluate(t.Transform(keys.Transform(test))).MicroAccuracy;
double mix = Accuracy(student);
using var head = student.WithRetrievalWeight(0, 0);
double headOnly = Accuracy(head);
Console.WriteLine($"seed {seed}\tcorpus {Path.GetFileName(corpus.TrimEnd('/'))} {corpusRows}{(replace ? " replace" : "")}\tentries {joined.Count}\thead {headOnly:F2}\tmix {mix:F2}\t" +
                  $"gain {mix - headOnly:+0.00;-0.00}\tλ {student.RetrievalWeight:F2} μ {student.LexicalRetrievalWeight:F2}\tlabel {labelSeconds:F0} s\tstudent {clock.Elapsed.TotalSeconds - labelSeconds:F0} s");
return 0;
