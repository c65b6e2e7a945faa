using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.Samples.Data;
using TorchSharp;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// The fluency filter reads a second part as the teacher reads it after its context: after a space, as the soft prompt
/// is trained on it and generation writes it. It used to score the trimmed sample glued to the context
/// ("…In other words:The company said…"), a token sequence the teacher never saw, so every pair sample, the few-shot
/// references included, looked less fluent than it is.
/// </summary>
public sealed class FluencyFilterPairTests
{
    [SharedDataFact]
    public void ASecondPartIsScoredAfterTheSpaceItIsGeneratedWith()
    {
        using var teacher = ShippedTeachers.Mrpc();
        var task = FewShotBenchmarks.Load(SharedData.Path("data"), "MRPC", 13);
        var template = task.Template;
        Assert.Equal(GenerationTarget.SecondPart, template.Target);
        var pairs = task.Test.Take(40).Select(r => (r.Text, (string?)r.Text2)).ToList();
        var filter = new FluencyFilter(teacher, template, pairs.Take(4), margin: 0);
        var spaced = filter.MeanTokenNll(pairs);

        // The same sentences scored glued to their context, as the filter did before.
        var contexts = pairs.Select(p => template.RenderContext(p.Text)).ToList();
        var glued = teacher.ScoreContinuations(contexts, pairs.Select(p => p.Item2!).ToList());
        var gluedNll = glued.Select((score, i) => -score / teacher.Tokenizer!.EncodeContinuation(pairs[i].Item2!).Length).ToList();

        // The filter's value is the teacher's NLL of exactly the ids the soft prompt is trained to produce (EOS aside);
        // within 1e-5, as a row scored in another batch differs by its padding.
        var ids = teacher.Tokenizer!.EncodeContinuation(" " + pairs[0].Item2);
        var own = teacher.ScoreContinuations([contexts[0]], [" " + pairs[0].Item2])[0];
        Assert.True(Math.Abs(-own / ids.Length - spaced[0]) < 1e-5, $"filter {spaced[0]:R}, the trained ids {-own / ids.Length:R}");

        int lower = spaced.Zip(gluedNll).Count(p => p.First < p.Second);
        Assert.True(lower >= 36, $"the spaced reading was the more fluent for {lower} of 40 real MRPC pairs; mean NLL spaced {spaced.Average():F3}, glued {gluedNll.Average():F3}");
    }

    /// <summary>
    /// A sample the teacher scores NaN passed the filter (NaN compares false with the threshold), while a resumed
    /// extraction reads the NLL it stored for it (non-finite, so null) as +∞: the same run could keep or drop it depending
    /// on whether it was resumed. MeanTokenNll now gives +∞ for NaN, the value a resumed run reads. (The shipped teachers
    /// tie their output layer to the embeddings, so one poisoned token row turns every text's NLL NaN, not one text's.)
    /// </summary>
    [SharedDataFact]
    public void ATextTheTeacherScoresNaNHasTheNllAResumedRunReads()
    {
        using var teacher = ShippedTeachers.Mrpc();
        var task = FewShotBenchmarks.Load(SharedData.Path("data"), "MRPC", 13);
        var pairs = task.Test.Take(2).Select(r => (r.Text, (string?)r.Text2)).ToList();
        var filter = new FluencyFilter(teacher, task.Template, pairs, margin: 0);
        Assert.All(filter.MeanTokenNll(pairs), v => Assert.True(double.IsFinite(v), $"a real pair scored {v}"));
        int poisoned = teacher.Tokenizer!.EncodeContinuation(" zebra")[0];
        var embeddings = teacher.NamedParameters().First(p => p.Name.EndsWith("embed_tokens.weight", StringComparison.Ordinal)).Parameter;
        using var nan = double.NaN.ToScalar(); // held, not a temporary (HeldScalarTests)
        using (TorchSharp.torch.no_grad()) embeddings[poisoned].fill_(nan);
        Assert.All(filter.MeanTokenNll([(pairs[0].Text, "The zebra said so ."), pairs[1]]), v => Assert.Equal(double.PositiveInfinity, v));
    }
}
