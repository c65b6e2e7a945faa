using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// The black-box extractor judged a sample the endpoint gave no label with a made-up all-zero label. With
/// FidelityThreshold 0 (and RequireArgmax, which zeros pass) that passed fidelity, so the text was remembered as kept
/// before the sample was dropped as LowFidelity, and a later, labelled copy of it was dropped as a duplicate of a sample
/// that is not in the store. <see cref="SampleJudge.JudgeUnlabelled"/> checks the text alone and remembers nothing.
/// </summary>
public class UnlabelledSampleJudgeTests
{
    private static SampleJudge Judge(bool dropUnfinished = false) =>
        new(TaskTemplates.Sst2, minWords: 3, maxWords: 40, fidelityThreshold: 0, requireArgmax: true, nearDuplicateThreshold: 0.8, dropUnfinished);

    [Fact]
    public void AnUnlabelledSampleIsNotRememberedSoItsLabelledCopyIsKept()
    {
        const string text = "a warm and moving film about two brothers";
        var judge = Judge();
        Assert.Null(judge.JudgeUnlabelled(text, null, finished: true));                   // the caller drops it as LowFidelity
        Assert.Null(judge.Judge(text, null, [0.1f, 0.9f], 1, finished: true));             // kept: nothing remembered it
        Assert.Equal(DropReason.ExactDuplicate, judge.Judge(text, null, [0.1f, 0.9f], 1, finished: true));

        // The judgement the black-box extractor used to make, with zeros for the label, remembers the text.
        var old = Judge();
        Assert.Null(old.Judge(text, null, new float[2], 1, finished: true));
        Assert.Equal(DropReason.ExactDuplicate, old.Judge(text, null, [0.1f, 0.9f], 1, finished: true));
    }

    [Fact]
    public void EmptyAndUnfinishedAreStillNamed()
    {
        Assert.Equal(DropReason.Empty, Judge().JudgeUnlabelled("  ", null, finished: true));
        Assert.Equal(DropReason.Empty, Judge().JudgeUnlabelled(" , . ", null, finished: true));              // no word
        Assert.Equal(DropReason.Unfinished, Judge(dropUnfinished: true).JudgeUnlabelled("cut off in the mid", null, finished: false));
        Assert.Null(Judge().JudgeUnlabelled("cut off in the mid", null, finished: false));                  // off by default
    }
}

/// <summary>
/// A sample dropped because its label is full is not in the store, so the duplicate filter must not remember it: it used
/// to (the quota was checked after the judge had remembered the text), and a later copy of it, filed under a label with
/// room, was dropped as a duplicate of a text that is not in the store.
/// </summary>
public class OverQuotaSampleJudgeTests
{
    private static SampleJudge Judge() =>
        new(TaskTemplates.Sst2, minWords: 3, maxWords: 40, fidelityThreshold: 0, requireArgmax: false, nearDuplicateThreshold: 0.8, dropUnfinished: false);

    [Fact]
    public void ASampleDroppedOverQuotaIsNotRememberedAndDuplicatesStillComeFirst()
    {
        const string text = "a warm and moving film about two brothers and their long road home";
        var judge = Judge();
        Assert.Equal(DropReason.OverQuota, judge.Judge(text, null, [0.1f, 0.9f], 1, finished: true, labelFull: true));
        Assert.Null(judge.Judge(text + ".", null, [0.9f, 0.1f], 0, finished: true));                 // kept: nothing remembered the dropped one
        Assert.Equal(DropReason.ExactDuplicate, judge.Judge(text, null, [0.1f, 0.9f], 1, finished: true, labelFull: true));
        Assert.Equal(DropReason.NearDuplicate, judge.Judge(text + " again", null, [0.9f, 0.1f], 0, finished: true, labelFull: true));
        Assert.Equal(DropReason.TooShort, judge.Judge("so good", null, [0.1f, 0.9f], 1, finished: true, labelFull: true));
    }
}
