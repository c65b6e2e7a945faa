using Microsoft.ML;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.Samples.Data;

namespace RetriKT.MLNet.Tests.Pipeline;

/// <summary>
/// The pipeline's store corpus (<see cref="RetriKTPipelineOptions.StoreCorpus"/>) with the shipped SST-2 stand-in
/// teacher on real critics' sentences: on a store of the few-shot rows alone the student's store is those rows and the
/// drawn sentences; the few-shot reference (no store) gets none; pair tasks and a corpus that is also the tuning corpus
/// are refused with one line.
/// </summary>
public class StoreCorpusTests
{
    private static readonly string Corpus = SharedData.Path("data", "corpora", "movie-reviews-polarity-v2");

    [Fact]
    public void OnTheFewShotRowsStoreTheStudentLearnsFromTheTeacherLabelledSentences()
    {
        using var teacher = ShippedTeachers.Sst2();
        var options = new RetriKTPipelineOptions
        {
            StoreCorpus = Corpus, StoreCorpusRows = 64, Seed = 13, StudentEpochs = 1, StudentHiddenSize = 16, StudentFeedForwardSize = 32, StudentLayers = 1,
        };
        var messages = new List<string>();
        var ml = new MLContext(seed: 1);
        ml.Log += (_, e) => { if (e.RawMessage.StartsWith("Unlabelled text:", StringComparison.Ordinal)) lock (messages) messages.Add(e.RawMessage); };
        var task = FewShotBenchmarks.Load(SharedData.Path("data"), "SST-2", 13);
        var pipeline = new RetriKTPipeline(ml, teacher, "shipped", options);
        using var trained = pipeline.TrainStudent(task, StoreExtraction.FewShotRows(task), useRetrieval: false);

        Assert.Equal(64, trained.StoreCorpusEntries);
        // The student's saved store: the few-shot rows, then the sentences less the validation share held out of them.
        var store = trained.Student.Store;
        Assert.Equal(task.Train.Count, store.Entries.Count(e => e.Source == RetriKT.MLNet.Knowledge.KnowledgeSource.FewShot));
        var drawn = CorpusSentences.Draw(Corpus, 64, 13, CorpusSentences.StoreOption);
        var kept = store.Entries.Where(e => e.Source == RetriKT.MLNet.Knowledge.KnowledgeSource.Unlabeled).Select(e => e.Text).ToList();
        Assert.InRange(kept.Count, 50, 63);
        Assert.All(kept, t => Assert.Contains(t, drawn));
        Assert.Contains("64 texts labelled by the teacher", Assert.Single(messages));
        // The few-shot reference has no store, and the corpus does not give it one.
        using (var fewShotOnly = pipeline.TrainStudent(task, extraction: null, useRetrieval: false))
        {
            Assert.Equal(0, fewShotOnly.StoreCorpusEntries);
            Assert.Equal(task.Train.Count, fewShotOnly.Student.Store.Count);
        }
        // The store draw is not the tuning draw of the same corpus and seed.
        Assert.NotEqual(drawn, CorpusSentences.Draw(Corpus, 64, 13));

        var pair = FewShotBenchmarks.Load(SharedData.Path("data"), "MRPC", 13);
        var refused = Assert.Throws<ArgumentException>(() => new RetriKTPipeline(ml, teacher, "shipped", options).TrainStudent(pair, StoreExtraction.FewShotRows(pair)));
        Assert.Equal($"StoreCorpus '{Corpus}' gives single sentences; task MRPC takes sentence pairs. Leave StoreCorpus unset for it.", refused.Message);

        var both = options.Clone();
        both.TuningCorpus = Corpus + "/";
        var same = Assert.Throws<ArgumentException>(() => new RetriKTPipeline(ml, teacher, "shipped", both).TrainStudent(task, StoreExtraction.FewShotRows(task)));
        Assert.Equal($"StoreCorpus and TuningCorpus are the same text '{Corpus}'; a tuning row could then be a store entry the student trained on. Give the tuning rows other text.", same.Message);
    }

    [Fact]
    public void AfterTrainingTheSentencesJoinTheTrainedStudentsStoreAndTheHeadStaysTheSame()
    {
        using var teacher = ShippedTeachers.Sst2();
        var options = new RetriKTPipelineOptions
        {
            StoreCorpus = Corpus, StoreCorpusRows = 200, StoreCorpusTuningRows = 100, StoreCorpusAfterTraining = true, Seed = 13,
            StudentEpochs = 1, StudentHiddenSize = 16, StudentFeedForwardSize = 32, StudentLayers = 1, StudentEarlyStoppingPatience = 0,
        };
        var messages = new List<string>();
        var ml = new MLContext(seed: 1);
        ml.Log += (_, e) => { if (e.RawMessage.StartsWith("Store corpus after training:", StringComparison.Ordinal)) lock (messages) messages.Add(e.RawMessage); };
        var task = FewShotBenchmarks.Load(SharedData.Path("data"), "SST-2", 13);
        // A store with entries to hold out, as an extracted one has: the epoch and the first mix are then chosen on
        // weighted validation rows, and the trainer's options name their weight columns.
        var fewShot = StoreExtraction.FewShotRows(task);
        var other = CorpusSentences.Draw(SharedData.Path("data", "corpora", "imdb-unsup"), 200, 13, CorpusSentences.StoreOption).Select(t => (t, (string?)null)).ToList();
        var extraction = fewShot with { Store = UnlabeledText.Add(fewShot.Store, other, new VerbalizerClassifier(teacher, task.Template, task.Labels)) };
        using var grown = new RetriKTPipeline(ml, teacher, "shipped", options).TrainStudent(task, extraction, useRetrieval: true);
        var plainOptions = options.Clone();
        plainOptions.StoreCorpus = null;
        using var plain = new RetriKTPipeline(ml, teacher, "shipped", plainOptions).TrainStudent(task, extraction, useRetrieval: true);
        Assert.Equal(task.Train.Count + 180, plain.Student.Store.Count); // a tenth of the 200 held out

        // The student trained without the sentences; its store then gained the 200 drawn for it, never the 100 the mix
        // was chosen on.
        Assert.Equal(200, grown.StoreCorpusEntries);
        Assert.Equal(plain.Student.Store.Count + 200, grown.Student.Store.Count);
        var (drawn, _) = CorpusSentences.DrawWithTuningDocuments(Corpus, 200, 100, 13);
        Assert.Equal(drawn, grown.Student.Store.Entries.Skip(plain.Student.Store.Count).Select(e => e.Text));
        // Same head: the sentences reach predictions only through retrieval.
        var dev = task.Test.Take(40).Select(r => r.Text).ToList();
        using (var a = plain.Student.WithRetrievalWeight(0, 0))
        using (var b = grown.Student.WithRetrievalWeight(0, 0))
            Assert.Equal(a.PredictBatch(dev), b.PredictBatch(dev));
        Assert.StartsWith("Store corpus after training: 200 sentences added to the trained student's store, the mix chosen again on 100 others:", Assert.Single(messages));

        // A student without retrieval could not use them: refused, not ignored.
        var refused = Assert.Throws<ArgumentException>(() => new RetriKTPipeline(ml, teacher, "shipped", options).TrainStudent(task, StoreExtraction.FewShotRows(task), useRetrieval: false));
        Assert.Equal($"StoreCorpusAfterTraining adds '{Corpus}' to the store through retrieval; a student without retrieval cannot use it. Leave it unset for this student.", refused.Message);
    }

    [Fact]
    public void TuningSentencesComeFromOtherReviewsThanTheStoresSentences()
    {
        var (store, tuning) = CorpusSentences.DrawWithTuningDocuments(Corpus, 300, 100, 13);
        Assert.Equal(300, store.Distinct().Count());
        Assert.Equal(100, tuning.Distinct().Count());
        // Each review is one line of the corpus: no line holds both a store sentence and a tuning sentence.
        var lines = Directory.GetFiles(Corpus, "*.txt").Order(StringComparer.Ordinal).SelectMany(File.ReadLines).ToList();
        int LineOf(string sentence) => lines.FindIndex(l => l.Contains(sentence, StringComparison.Ordinal));
        var storeLines = store.Select(LineOf).ToHashSet();
        var tuningLines = tuning.Select(LineOf).ToHashSet();
        Assert.DoesNotContain(-1, storeLines);
        Assert.Empty(storeLines.Intersect(tuningLines));
        Assert.True(tuningLines.Count < 60, $"{tuningLines.Count} reviews hold the 100 tuning sentences (whole reviews go to tuning).");
        // The same seed draws the same; another seed draws otherwise.
        var again = CorpusSentences.DrawWithTuningDocuments(Corpus, 300, 100, 13);
        Assert.Equal(store, again.Store);
        Assert.Equal(tuning, again.Tuning);
        Assert.NotEqual(tuning, CorpusSentences.DrawWithTuningDocuments(Corpus, 300, 100, 21).Tuning);
        var e = Assert.Throws<InvalidDataException>(() => CorpusSentences.DrawWithTuningDocuments(Corpus, 10_000_000, 100, 13));
        Assert.StartsWith($"StoreCorpus '{Corpus}': ", e.Message);
        Assert.EndsWith("expected StoreCorpusTuningRows = 100 and StoreCorpusRows = 10000000.", e.Message);
    }

    /// <summary>
    /// "The text must not hold the task's test split" was only said in the options' docs: a corpus holding the test
    /// sentences went into the store (or the tuning rows), labelled by the teacher, where retrieval finds each test row's
    /// own sentence at similarity 1. Here a user's "unlabelled" file is SST-2's test rows in plain spelling; the student
    /// is now refused before the teacher labels anything. The harness's SST-2 corpus holds no test sentence: its draws pass.
    /// </summary>
    [Fact]
    public void ACorpusHoldingTestSentencesIsRefusedBeforeTheTeacherLabelsThem()
    {
        var task = FewShotBenchmarks.Load(SharedData.Path("data"), "SST-2", 13);
        using var temp = new TempDir("retrikt-store-corpus-test-");
        var file = temp.File("reviews.txt");
        // "it 's a charming film ." as a person writes it: "It's a charming film."
        static string Plain(string row) => (char.ToUpperInvariant(row[0]) + row[1..]).Replace(" 's", "'s").Replace(" ,", ",").Replace(" .", ".").Trim();
        File.WriteAllLines(file, task.Test.Select(r => r.Text).Where(t => t.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length is >= 8 and <= 30).Take(60).Select(Plain));
        using var teacher = RetriKT.MLNet.Teacher.TeacherModel.Create(new RetriKT.MLNet.Teacher.TeacherConfig { VocabSize = 300 },
            RetriKT.MLNet.Teacher.ByteLevelBpeTrainer.Train(["a b c"], 300, temp.File("tokenizer")));
        var options = new RetriKTPipelineOptions { StoreCorpus = file, StoreCorpusRows = 40, StudentEpochs = 1, StudentHiddenSize = 16, StudentLayers = 1 };
        var e = Assert.Throws<InvalidDataException>(() =>
            new RetriKTPipeline(new MLContext(seed: 1), teacher, "tiny", options).TrainStudent(task, StoreExtraction.FewShotRows(task)));
        Assert.True(e.Message.StartsWith($"StoreCorpus '{file}': 40 of the 40 sentences drawn are in the test split of task SST-2 (the first: '", StringComparison.Ordinal)
                    && e.Message.EndsWith("'); the text must not hold the task's test split.", StringComparison.Ordinal), e.Message);

        // The evaluated corpus: the store draw and the tuning draw of the sizes the harness uses.
        var test = task.Test.Select(r => r.Text).ToList();
        CorpusSentences.RequireApartFromTest(CorpusSentences.Draw(Corpus, RetriKTPipelineOptions.DefaultStoreCorpusRows, 1, CorpusSentences.StoreOption), test, "SST-2", Corpus, CorpusSentences.StoreOption);
        CorpusSentences.RequireApartFromTest(CorpusSentences.Draw(Corpus, RetriKTPipelineOptions.DefaultTuningCorpusRows, 1), test, "SST-2", Corpus, CorpusSentences.TuningOption);
    }
}
