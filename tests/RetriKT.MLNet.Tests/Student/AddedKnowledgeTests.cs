using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// <see cref="RetrievalClassifierTransformer.WithAddedKnowledge"/>: a trained student's store grows without training
/// again. Real SST-2 rows: a tiny student trained on the 16-shot split of seed 13 (term matching on), grown with rows of
/// the GLUE training split.
/// </summary>
public class AddedKnowledgeTests
{
    /// <summary>
    /// A tiny student on the 32 few-shot rows. With k = 8 (32 ≥ 4 × 8) training builds a term index and μ is fixed at
    /// 0.3; with a larger k it builds none, and μ is left to the trainer (0).
    /// </summary>
    private static (MLContext Ml, RetrievalClassifierTransformer Student) TrainTiny(bool saveStoreTexts = true, int termMatchNeighbors = 8)
    {
        var ml = new MLContext(seed: 1);
        var train = TestData.Sst2Train(ml);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 32, Epochs = 2, BatchSize = 8, LexicalNeighborCount = termMatchNeighbors,
            RetrievalWeight = 0.3, LexicalRetrievalWeight = termMatchNeighbors <= 8 ? 0.3 : null, SaveStoreTexts = saveStoreTexts,
        }).Fit(keyMap.Transform(train));
        return (ml, student);
    }

    /// <summary>GLUE training rows as store entries with one-hot soft labels, in the student's label order.</summary>
    private static KnowledgeStore GlueRows(IReadOnlyList<string> labelNames, int count)
    {
        var rows = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "train.tsv")).Take(count);
        return new KnowledgeStore(labelNames, rows.Select(r =>
        {
            int label = labelNames.ToList().IndexOf(r.Label);
            var soft = new float[labelNames.Count];
            soft[label] = 1;
            return new KnowledgeEntry(r.Text, null, label, soft, 1, KnowledgeSource.Unlabeled);
        }));
    }

    [SharedDataFact]
    public void AGrownStudentKeepsTheIndexKindItWasGiven()
    {
        // WithAddedKnowledge and TuneMix built their model with the automatic choice: a student forced to HNSW searched
        // the grown store exactly (and one forced to exact would switch to HNSW once the store passed the switch).
        var ml = new MLContext(seed: 1);
        var train = TestData.Sst2Train(ml);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var dev = keyMap.Transform(ml.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "dev.tsv"))));
        var trainer = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 32, Epochs = 2, BatchSize = 8, LexicalNeighborCount = 8,
        });
        using var student = trainer.Fit(keyMap.Transform(train));
        using var hnsw = student.WithIndex(RetrieverIndexKind.Hnsw);
        Assert.IsType<HnswIndex>(hnsw.Index);
        using var grown = hnsw.WithAddedKnowledge(GlueRows(student.LabelNames, 40));
        Assert.Equal(grown.Store.Count, Assert.IsType<HnswIndex>(grown.Index).Count);
        using var tuned = trainer.TuneMix(grown, dev);
        Assert.IsType<HnswIndex>(tuned.Index);
        using var automatic = student.WithAddedKnowledge(GlueRows(student.LabelNames, 40));
        Assert.IsType<ExactIndex>(automatic.Index);
    }

    [SharedDataFact]
    public void AddedEntriesAreFoundByBothRetrieversAndTheHeadIsUnchanged()
    {
        var (ml, student) = TrainTiny();
        using var owned = student;
        var added = GlueRows(student.LabelNames, 200);
        int before = student.Store.Count;
        using var grown = student.WithAddedKnowledge(added);

        Assert.Equal(before + 200, grown.Store.Count);
        Assert.Equal(student.RetrievalWeight, grown.RetrievalWeight);
        Assert.Equal(student.LexicalRetrievalWeight, grown.LexicalRetrievalWeight);
        // The old entries keep their embeddings; the added ones are this student's embeddings of their texts.
        for (int i = 0; i < before; i++)
            Assert.Equal(student.Store.Embedding(i).ToArray(), grown.Store.Embedding(i).ToArray(), new FloatTolerance(1e-6f));
        var expected = new float[added.Count * student.Dimension];
        student.Encode(added.Entries.Select(e => (e.Text!, e.Text2)).ToList(), expected);
        for (int i = 0; i < added.Count; i++)
            Assert.Equal(expected.AsSpan(i * student.Dimension, student.Dimension).ToArray(), grown.Store.Embedding(before + i).ToArray(), new FloatTolerance(1e-6f));

        // Each added text finds itself first: by embedding (an entry at similarity 1: a text whose tokens the 32-row
        // vocabulary mostly lacks can share its embedding with another), and by term match (the index covers every entry;
        // a text with no word in that vocabulary matches nothing).
        var lexical = grown.Model.Lexical!;
        Assert.Equal(before + 200, lexical.Count);
        Span<int> idx = stackalloc int[1];
        Span<float> sims = stackalloc float[1];
        int foundByTerms = 0, foundByEmbedding = 0, withoutKnownWords = 0;
        for (int i = 0; i < added.Count; i++)
        {
            var text = added.Entries[i].Text!;
            var nearest = grown.Predict(text, neighbors: 1).Neighbors[0];
            if (nearest.Similarity >= 1 - 1e-5f) foundByEmbedding++;
            int found = lexical.Search(grown.Model.Tokenize(text, null, out _), 1, idx, sims);
            if (found == 0) withoutKnownWords++;
            else if (sims[0] >= 1 - 1e-5f) foundByTerms++;
        }
        Assert.Equal(200, foundByEmbedding);
        Assert.Equal(200, foundByTerms + withoutKnownWords);
        Assert.True(foundByTerms >= 150, $"{foundByTerms} of 200 added texts share a word with the 32-row vocabulary.");

        // The head is the same: with the mix set to the head alone, the grown model predicts exactly as before.
        var probe = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(50).Select(r => r.Text).ToList();
        using var headBefore = student.WithRetrievalWeight(0, 0);
        using var headAfter = grown.WithRetrievalWeight(0, 0);
        Assert.Equal(headBefore.PredictBatch(probe), headAfter.PredictBatch(probe));
        // With retrieval the added rows do move predictions (their labels are gold, the tiny head is near chance).
        Assert.NotEqual(student.PredictBatch(probe), grown.PredictBatch(probe));

        // Saved and loaded, the grown model keeps its store and predicts the same.
        using var temp = new TempDir();
        string path = temp.File("grown.zip");
        ml.Model.Save(grown, null, path);
        using var loaded = (RetrievalClassifierTransformer)ml.Model.Load(path, out _);
        Assert.Equal(before + 200, loaded.Store.Count);
        Assert.Equal(grown.PredictBatch(probe), loaded.PredictBatch(probe));
    }

    [SharedDataFact]
    public void AModelTrainedWithoutATermIndexGetsOneWhenItsStoreGrowsLargeEnough()
    {
        // 32 rows are too few for term matching over 16 neighbours (it needs 4 × 16), so training builds no index.
        var (ml, student) = TrainTiny(termMatchNeighbors: 16);
        using var owned = student;
        Assert.Null(student.Model.Lexical);
        Assert.Equal(0, student.LexicalRetrievalWeight);

        // 32 + 20 entries are still too few: no index, as training would decide.
        using (var small = student.WithAddedKnowledge(GlueRows(student.LabelNames, 20), termMatchNeighbors: 16))
            Assert.Null(small.Model.Lexical);
        // 0 keeps the model without one however large the store grows.
        using (var off = student.WithAddedKnowledge(GlueRows(student.LabelNames, 200), termMatchNeighbors: 0))
            Assert.Null(off.Model.Lexical);

        var added = GlueRows(student.LabelNames, 200);
        using var grown = student.WithAddedKnowledge(added, termMatchNeighbors: 16);
        var lexical = grown.Model.Lexical;
        Assert.NotNull(lexical);
        Assert.Equal(232, lexical.Count);
        Assert.Equal(16, grown.Model.LexicalNeighborCount);
        // μ stays 0 until the mix is chosen again, so the grown model predicts as one grown without the index.
        Assert.Equal(0, grown.LexicalRetrievalWeight);
        var probe = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(50).Select(r => r.Text).ToList();
        using (var withoutIndex = student.WithAddedKnowledge(added, termMatchNeighbors: 0))
            Assert.Equal(withoutIndex.PredictBatch(probe), grown.PredictBatch(probe));
        // The new index is a real part: each added text with a word in the vocabulary finds itself first by term match,
        // and term matching alone predicts other labels than the head on some rows.
        Span<int> idx = stackalloc int[1];
        Span<float> sims = stackalloc float[1];
        int foundByTerms = 0;
        foreach (var entry in added.Entries)
            if (lexical.Search(grown.Model.Tokenize(entry.Text!, null, out _), 1, idx, sims) == 1 && sims[0] >= 1 - 1e-5f) foundByTerms++;
        Assert.True(foundByTerms >= 150, $"{foundByTerms} of 200 added texts found themselves by term match.");
        using (var termsAlone = grown.WithRetrievalWeight(0, 1))
        using (var head = grown.WithRetrievalWeight(0, 0))
            Assert.NotEqual(head.PredictBatch(probe), termsAlone.PredictBatch(probe));

        // Saved and loaded, the index and its k come back.
        using var temp = new TempDir();
        string path = temp.File("grown-index.zip");
        using (var withTerms = grown.WithRetrievalWeight(0.2, 0.3)) ml.Model.Save(withTerms, null, path);
        using var loaded = (RetrievalClassifierTransformer)ml.Model.Load(path, out _);
        Assert.Equal(232, loaded.Model.Lexical!.Count);
        Assert.Equal(16, loaded.Model.LexicalNeighborCount);
        using var expected = grown.WithRetrievalWeight(0.2, 0.3);
        Assert.Equal(expected.PredictBatch(probe), loaded.PredictBatch(probe));

        // A model saved without its store's texts cannot index its old entries: it grows by embedding only.
        var (ml2, bare) = TrainTiny(saveStoreTexts: false, termMatchNeighbors: 16);
        string barePath = temp.File("bare-index.zip");
        using (bare) ml2.Model.Save(bare, null, barePath);
        using var loadedBare = (RetrievalClassifierTransformer)ml2.Model.Load(barePath, out _);
        using var grownBare = loadedBare.WithAddedKnowledge(GlueRows(loadedBare.LabelNames, 200), termMatchNeighbors: 16);
        Assert.Null(grownBare.Model.Lexical);
        Assert.Equal(232, grownBare.Store.Count);
    }

    [SharedDataFact]
    public void NeighboursExplainThroughTheRetrievalPartThatWeighsMore()
    {
        var (ml, student) = TrainTiny();
        using var owned = student;
        using var grown = student.WithAddedKnowledge(GlueRows(student.LabelNames, 200));
        var lexical = grown.Model.Lexical!;
        var texts = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(40).Select(r => r.Text).ToList();
        using var termsWeighMore = grown.WithRetrievalWeight(0.2, 0.5);
        using var embeddingWeighsMore = grown.WithRetrievalWeight(0.5, 0.2);
        Span<int> idx = stackalloc int[3];
        Span<float> sims = stackalloc float[3];
        int differ = 0;
        foreach (var text in texts)
        {
            // μ > λ: the term-match search's top 3, with their TF-IDF cosines.
            var byTerms = termsWeighMore.Predict(text, neighbors: 3).Neighbors;
            int found = lexical.Search(grown.Model.Tokenize(text, null, out _), 3, idx, sims);
            Assert.Equal(idx[..found].ToArray(), byTerms.Select(n => n.EntryIndex).ToArray());
            Assert.Equal(sims[..found].ToArray(), byTerms.Select(n => n.Similarity).ToArray());
            // λ ≥ μ: the embedding's top 3, with their cosines.
            var byEmbedding = embeddingWeighsMore.Predict(text, neighbors: 3).Neighbors;
            var query = new float[grown.Dimension];
            grown.Encode([(text, null)], query);
            grown.Index.Search(query, 3, idx, sims);
            Assert.Equal(idx.ToArray(), byEmbedding.Select(n => n.EntryIndex).ToArray());
            if (!byTerms.Select(n => n.EntryIndex).SequenceEqual(byEmbedding.Select(n => n.EntryIndex))) differ++;
        }
        Assert.True(differ >= 20, $"Term match and the embedding named the same neighbours for {40 - differ} of 40 texts.");
        // Asking for neighbours does not change the scores.
        var scored = termsWeighMore.PredictBatch(texts);
        for (int i = 0; i < texts.Count; i++)
            Assert.Equal(scored[i], termsWeighMore.Predict(texts[i], neighbors: 3).Scores);
    }

    [SharedDataFact]
    public void ExplanationsShowEveryPartWithItsWeightAndMixBackToThePrediction()
    {
        var (ml, student) = TrainTiny();
        using var owned = student;
        using var grown = student.WithAddedKnowledge(GlueRows(student.LabelNames, 200));
        using var headAlone = grown.WithRetrievalWeight(0, 0);
        using var retrievalAlone = grown.WithRetrievalWeight(1, 0);
        using var termsAlone = grown.WithRetrievalWeight(0, 1);
        var texts = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(30).Select(r => r.Text).ToList();
        foreach (var (lambda, mu) in new[] { (0.2, 0.5), (0.5, 0.2), (0.0, 0.0) })
        {
            using var mixed = grown.WithRetrievalWeight(lambda, mu);
            foreach (var text in texts)
            {
                var why = mixed.Explain(text, neighbors: 3);
                var predicted = mixed.Predict(text, neighbors: 3);
                Assert.Equal(predicted.Scores, why.Prediction.Scores);
                Assert.Equal(predicted.Label, why.Prediction.Label);
                Assert.Equal(predicted.Neighbors, why.Prediction.Neighbors);
                // Each part is what the model with only that part says, and its weight is its share.
                Assert.Equal(headAlone.Predict(text, neighbors: 0).Scores, why.Head.Scores);
                Assert.Equal(retrievalAlone.Predict(text, neighbors: 0).Scores, why.Retrieval.Scores);
                Assert.Equal(termsAlone.Predict(text, neighbors: 0).Scores, why.TermMatch!.Scores);
                Assert.Equal(1 - lambda - mu, why.Head.Weight, 12);
                Assert.Equal(lambda, why.Retrieval.Weight);
                Assert.Equal(mu, why.TermMatch.Weight);
                Assert.Empty(why.Head.Neighbors);
                // Both parts' neighbours are shown, whichever weighs more.
                Assert.Equal(retrievalAlone.Predict(text, neighbors: 3).Neighbors, why.Retrieval.Neighbors);
                Assert.Equal(termsAlone.Predict(text, neighbors: 3).Neighbors, why.TermMatch.Neighbors);
                var combined = new float[grown.LabelNames.Count];
                RetrievalMix.Combine(why.Head.Scores, why.Retrieval.Scores, why.TermMatch.Scores, lambda, mu, combined);
                Assert.Equal(why.Prediction.Scores, combined);
            }
        }
        // No entry shares a word: term match falls back to the head and names no entry.
        var unknown = grown.WithRetrievalWeight(0.2, 0.5).Explain("zqx vvqz");
        Assert.Empty(unknown.TermMatch!.Neighbors);
        Assert.Equal(unknown.Head.Scores, unknown.TermMatch.Scores);
        Assert.Equal(3, unknown.Retrieval.Neighbors.Count);

        // A model without a term index has no term-match part.
        var (_, noIndex) = TrainTiny(termMatchNeighbors: 16);
        using var ownedNoIndex = noIndex;
        var plain = noIndex.Explain(texts[0], neighbors: 2);
        Assert.Null(plain.TermMatch);
        Assert.Equal(noIndex.Predict(texts[0], neighbors: 2).Scores, plain.Prediction.Scores);
        Assert.Equal(noIndex.Predict(texts[0], neighbors: 2).Neighbors, plain.Retrieval.Neighbors);
    }

    [SharedDataFact]
    public void TuneMixChoosesAsFitDoesAndLetsAddedGoldRowsCount()
    {
        var ml = new MLContext(seed: 1);
        var train = TestData.Sst2Train(ml);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var dev = keyMap.Transform(ml.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "dev.tsv"))));
        var options = new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 32, Epochs = 2, BatchSize = 8, LexicalNeighborCount = 8, ValidationSet = dev,
        };
        var trainer = ml.MulticlassClassification.Trainers.RetrievalClassifier(options);
        using var student = trainer.Fit(keyMap.Transform(train));

        // On the rows Fit tuned on, TuneMix makes Fit's choice (the runtime network's outputs against the training one's).
        using (var again = trainer.TuneMix(student, dev))
        {
            Assert.Equal(student.RetrievalWeight, again.RetrievalWeight, 9);
            Assert.Equal(student.LexicalRetrievalWeight, again.LexicalRetrievalWeight, 9);
            Assert.Equal(student.Temperature, again.Temperature, 5);
            Assert.Equal(student.LexicalTemperature, again.LexicalTemperature, 9);
        }

        // Grown with 2,000 gold GLUE rows and tuned on 1,000 others, the same head scores better on the official dev set.
        var glue = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "train.tsv"));
        using var grown = student.WithAddedKnowledge(GlueRows(student.LabelNames, 2000));
        var tuning = keyMap.Transform(ml.Data.LoadFromEnumerable(glue.Skip(2000).Take(1000)));
        using var tuned = trainer.TuneMix(grown, tuning);
        var official = keyMap.Transform(ml.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv"))));
        double Accuracy(ITransformer t) => ml.MulticlassClassification.Evaluate(t.Transform(official)).MicroAccuracy;
        double before = Accuracy(student), after = Accuracy(tuned);
        Assert.True(tuned.RetrievalWeight + tuned.LexicalRetrievalWeight > 0, "The mix tuned on gold rows of the added kind uses retrieval.");
        Assert.True(after > before + 0.03, $"Official dev accuracy: {before:P1} before, {after:P1} grown and tuned.");
    }

    [SharedDataFact]
    public void EntriesTheStudentCannotUseFailWithOneMessage()
    {
        var (_, student) = TrainTiny();
        using var owned = student;
        var swapped = GlueRows(student.LabelNames.Reverse().ToList(), 5);
        var e = Assert.Throws<ArgumentException>(() => student.WithAddedKnowledge(swapped));
        Assert.StartsWith($"The added entries have labels [{student.LabelNames[1]}, {student.LabelNames[0]}], the model's store " +
                          $"[{student.LabelNames[0]}, {student.LabelNames[1]}] (same names, same order).", e.Message);

        var withoutTexts = GlueRows(student.LabelNames, 5).WithoutTexts();
        e = Assert.Throws<ArgumentException>(() => student.WithAddedKnowledge(withoutTexts));
        Assert.StartsWith("Added entry 0 has no text (found none); the student embeds the added entries from their texts.", e.Message);

        // Texts the student's tokenizer reads as nothing, and a second text for a one-text model, were embedded as
        // inputs the student never saw.
        var rows = GlueRows(student.LabelNames, 3).Entries;
        var zeroWidth = new KnowledgeStore(student.LabelNames, [rows[0], rows[1] with { Text = "\u200B \u200B" }, rows[2]]);
        e = Assert.Throws<ArgumentException>(() => student.WithAddedKnowledge(zeroWidth));
        Assert.StartsWith("Added entry 1 has no text (found one of only whitespace, control, zero-width or private-use characters", e.Message);
        var paired = new KnowledgeStore(student.LabelNames, [rows[0], rows[1], rows[2] with { Text2 = "a second sentence" }]);
        e = Assert.Throws<ArgumentException>(() => student.WithAddedKnowledge(paired));
        Assert.StartsWith("Added entry 2 has a second text, but this model reads one text (column 'Text').", e.Message);

        // A model saved without its store's texts cannot rebuild its term index over the added entries.
        var (ml, bare) = TrainTiny(saveStoreTexts: false);
        using var temp = new TempDir();
        string path = temp.File("bare.zip");
        using (bare) ml.Model.Save(bare, null, path);
        using var loaded = (RetrievalClassifierTransformer)ml.Model.Load(path, out _);
        var error = Assert.Throws<InvalidOperationException>(() => loaded.WithAddedKnowledge(GlueRows(loaded.LabelNames, 5)));
        Assert.Equal("The model's store entry 0 has no text (the model was saved without the store's texts), so its term-match index " +
                     "cannot be built again over the added entries.", error.Message);
    }

    private sealed class FloatTolerance(float tolerance) : IEqualityComparer<float>
    {
        public bool Equals(float x, float y) => Math.Abs(x - y) <= tolerance;
        public int GetHashCode(float obj) => 0;
    }
}
